import net from 'node:net';

/**
 * NO_PROXY as curl reads it: a comma- or space-separated list where `*` matches every host, a
 * name matches itself and every name under it (`example.com` and `.example.com` both match
 * `example.com` and `a.example.com`, never `notexample.com`), and an IP or CIDR
 * (`10.0.0.0/8`, `fd00::/8`, `[::1]`) matches IP literals in it; a name is never resolved to
 * match an IP entry. Beyond curl, as Go and most proxies-aware tools do: `*.example.com`, and a
 * `:PORT` suffix that limits an entry to that port.
 */
export class NoProxy {
  private constructor(
    private readonly all: boolean,
    private readonly names: readonly { readonly name: string; readonly port: number | undefined }[],
    private readonly ips: readonly { readonly list: net.BlockList; readonly port: number | undefined }[],
  ) {}

  static readonly NONE = new NoProxy(false, [], []);

  static parse(raw: string | undefined): NoProxy {
    if (raw === undefined) return NoProxy.NONE;
    let all = false;
    const names: { name: string; port: number | undefined }[] = [];
    const ips: { list: net.BlockList; port: number | undefined }[] = [];
    for (const token of raw.split(/[\s,]+/)) {
      const t = token.trim().toLowerCase();
      if (t === '') continue;
      if (t === '*') {
        all = true;
        continue;
      }
      const ip = ipRule(t);
      if (ip !== undefined) {
        ips.push(ip);
        continue;
      }
      const { host, port } = splitPort(t);
      const name = host.replace(/^\*?\.+/, '').replace(/\.+$/, '');
      if (name !== '') names.push({ name, port });
    }
    return new NoProxy(all, names, ips);
  }

  /** True when requests to this URL go direct. */
  matches(url: URL): boolean {
    if (this.all) return true;
    const host = url.hostname.replace(/^\[|\]$/g, '').replace(/\.+$/, '').toLowerCase();
    const port = Number(url.port || (url.protocol === 'https:' ? 443 : 80));
    const family = net.isIP(host);
    if (family !== 0) {
      const type = family === 4 ? 'ipv4' : 'ipv6';
      return this.ips.some((r) => (r.port === undefined || r.port === port) && r.list.check(host, type));
    }
    return this.names.some((r) => (r.port === undefined || r.port === port) && (host === r.name || host.endsWith(`.${r.name}`)));
  }
}

/** An IP, `[v6]`, either with `:port`, or a CIDR: as a BlockList of one rule. */
function ipRule(t: string): { list: net.BlockList; port: number | undefined } | undefined {
  const list = new net.BlockList();
  const slash = t.indexOf('/');
  if (slash > 0) {
    const addr = t.slice(0, slash).replace(/^\[|\]$/g, '');
    const bits = Number(t.slice(slash + 1));
    const family = net.isIP(addr);
    if (family === 0 || !Number.isInteger(bits) || bits < 0 || bits > (family === 4 ? 32 : 128)) return undefined;
    list.addSubnet(addr, bits, family === 4 ? 'ipv4' : 'ipv6');
    return { list, port: undefined };
  }
  // A bare IPv6 address has colons of its own: only the bracketed form carries a port.
  if (net.isIP(t) === 6) {
    list.addAddress(t, 'ipv6');
    return { list, port: undefined };
  }
  const { host, port } = splitPort(t);
  const addr = host.replace(/^\[|\]$/g, '');
  const family = net.isIP(addr);
  if (family === 0) return undefined;
  list.addAddress(addr, family === 4 ? 'ipv4' : 'ipv6');
  return { list, port };
}

function splitPort(t: string): { host: string; port: number | undefined } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(t);
  if (!m) return { host: t, port: undefined };
  return { host: m[1] ?? t, port: Number(m[2]) };
}
