/**
 * The Hub stand-in as its own process, driven over IPC by bench/setup.ts. Serving 1 GB from the
 * bench runner's own event loop would let the runner's polling and the server steal each
 * other's time; a separate process gets its own core, as a real CDN would.
 */
import { makeSafetensors, sha256Hex, startHub, type BlobFaults } from '../test/support/hub.js';

export type HubOp =
  | { op: 'addModel'; repo: string; path: string; payload: number; seed: number }
  | { op: 'addMany'; repo: string; dir: string; count: number; payload: number; seed: number }
  | { op: 'setFaults'; key: string; faults: BlobFaults }
  | { op: 'clearFaults' }
  | { op: 'served'; key: string }
  | { op: 'stats' }
  | { op: 'requestLog'; from: number }
  | { op: 'resetStats' }
  | { op: 'setTtfb'; ms: number }
  | { op: 'firstCdnAt' };

export interface HubStatsSnapshot {
  readonly requests: number;
  readonly apiCalls: number;
  readonly bytesServed: number;
}

export interface AddedFile {
  readonly path: string;
  readonly sha256: string;
  readonly size: number;
}

const hub = await startHub();

async function handle(msg: HubOp): Promise<unknown> {
  switch (msg.op) {
    case 'addModel': {
      const content = makeSafetensors(msg.payload, msg.seed);
      hub.addRepo({ id: msg.repo, files: [{ path: msg.path, content }] });
      return added(msg.path, content);
    }
    case 'addMany': {
      const list = Array.from({ length: msg.count }, (_, i) => ({
        path: `${msg.dir}/${String(i).padStart(5, '0')}.safetensors`,
        content: makeSafetensors(msg.payload, msg.seed + i),
      }));
      hub.addRepo({ id: msg.repo, files: list });
      return list.map((f) => added(f.path, f.content));
    }
    case 'setFaults':
      hub.setFaults(msg.key, msg.faults);
      return null;
    case 'clearFaults':
      hub.clearFaults();
      return null;
    case 'served':
      return hub.stats.bytesServed.get(msg.key) ?? 0;
    case 'stats': {
      let bytes = 0;
      for (const n of hub.stats.bytesServed.values()) bytes += n;
      const snap: HubStatsSnapshot = { requests: hub.stats.requests.length, apiCalls: hub.stats.apiCalls, bytesServed: bytes };
      return snap;
    }
    case 'requestLog':
      return hub.stats.requests.slice(msg.from).map((r) => `${r.host} ${r.method} ${r.url.split('?')[0] ?? ''} ${r.status}`);
    case 'resetStats':
      hub.resetStats();
      return null;
    case 'setTtfb':
      hub.ttfbMs = msg.ms;
      return null;
    case 'firstCdnAt': {
      // Date.now() of the first CDN answer since the last reset: the bench compares it with its own clock.
      let first: number | null = null;
      for (const r of hub.stats.requests) if (r.host === 'cdn' && r.method === 'GET' && (first === null || r.at < first)) first = r.at;
      return first;
    }
  }
}

function added(path: string, content: Buffer): AddedFile {
  return { path, sha256: sha256Hex(content), size: content.length };
}

process.on('message', (raw: { id: number; msg: HubOp }) => {
  handle(raw.msg).then(
    (result) => process.send?.({ id: raw.id, result }),
    (e: unknown) => process.send?.({ id: raw.id, error: e instanceof Error ? e.message : String(e) }),
  );
});
// The runner died or closed us: never outlive it.
process.on('disconnect', () => {
  void hub.close().finally(() => process.exit(0));
});
process.send?.({ ready: { endpoint: hub.endpoint, cdnOrigin: hub.cdnOrigin } });
