import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import tls from 'node:tls';
import { HttpProxyAgent } from 'http-proxy-agent';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { proxyRefused, proxyUnreachable } from './proxy-errors.js';
import { bypassesProxy } from './proxy-for.js';
import type { ProxyEndpoint, ProxySettings } from './proxy-settings.js';

type AgentConnectOpts = Parameters<HttpsProxyAgent<string>['connect']>[1];
type ProxiedRequest = Parameters<HttpProxyAgent<string>['addRequest']>[0];

/** What every http.Agent has at run time and @types/node leaves out. */
interface AddsRequests {
  addRequest(req: http.ClientRequest, opts: AgentConnectOpts): void;
}

export interface Agents {
  readonly httpAgent: http.Agent;
  readonly httpsAgent: https.Agent;
}

/**
 * The AWS SDK's agents: keep-alive ones as before, or, where HTTPS_PROXY / HTTP_PROXY name a
 * proxy, https-proxy-agent (CONNECT) and http-proxy-agent (absolute form), with NO_PROXY decided
 * per request (a virtual-hosted bucket is a host of its own). A refused CONNECT fails as the
 * proxy's error instead of being replayed to the SDK as if S3 had answered it.
 */
export function proxyAgents(settings: ProxySettings, maxSockets: number): Agents {
  const base = { keepAlive: true, maxSockets };
  const httpsAgent = settings.https === undefined ? new https.Agent(base) : routedHttps(settings.https, settings, base);
  const httpAgent = settings.http === undefined ? new http.Agent(base) : routedHttp(settings.http, settings, base);
  return { httpAgent, httpsAgent };
}

function targetOf(opts: AgentConnectOpts): URL {
  const host = opts.host ?? 'localhost';
  const h = net.isIPv6(host) ? `[${host}]` : host;
  return new URL(`${opts.secureEndpoint ? 'https' : 'http'}://${h}:${opts.port}`);
}

function headersOf(proxy: ProxyEndpoint): Record<string, string> {
  return proxy.authorization === undefined ? {} : { 'Proxy-Authorization': proxy.authorization };
}

function routedHttps(proxy: ProxyEndpoint, settings: ProxySettings, base: http.AgentOptions): https.Agent {
  class Routed extends HttpsProxyAgent<string> {
    override async connect(req: http.ClientRequest, opts: AgentConnectOpts): Promise<net.Socket> {
      const target = targetOf(opts);
      if (bypassesProxy(settings, target)) {
        const host = opts.host ?? 'localhost';
        return opts.secureEndpoint ? tls.connect({ ...opts, servername: opts.servername ?? (net.isIP(host) ? undefined : host) }) : net.connect(opts);
      }
      let status: number | undefined;
      req.once('proxyConnect', (connect: { statusCode?: number }) => (status = connect.statusCode));
      let socket: net.Socket;
      try {
        socket = await super.connect(req, opts);
      } catch (e) {
        throw proxyUnreachable(proxy, target.host, e);
      }
      if (status !== undefined && status !== 200) {
        socket.destroy();
        throw proxyRefused(proxy, target.host, status);
      }
      return socket;
    }
  }
  // An agent-base Agent is an http.Agent; the SDK only hands it to https.request.
  return new Routed(proxy.name, { ...base, headers: headersOf(proxy) }) as unknown as https.Agent;
}

function routedHttp(proxy: ProxyEndpoint, settings: ProxySettings, base: http.AgentOptions): http.Agent {
  const direct = new http.Agent(base) as http.Agent & AddsRequests;
  class Routed extends HttpProxyAgent<string> {
    // A request that goes direct is handed whole to a plain agent: origin-form path, its own pool.
    override addRequest(req: ProxiedRequest, opts: AgentConnectOpts): void {
      if (bypassesProxy(settings, targetOf(opts))) direct.addRequest(req, opts);
      else super.addRequest(req, opts);
    }

    override async connect(req: ProxiedRequest, opts: AgentConnectOpts): Promise<net.Socket> {
      try {
        return await super.connect(req, opts);
      } catch (e) {
        throw proxyUnreachable(proxy, targetOf(opts).host, e);
      }
    }
  }
  return new Routed(proxy.name, { ...base, headers: headersOf(proxy) });
}
