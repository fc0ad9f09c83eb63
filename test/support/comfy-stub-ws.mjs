// The ComfyUI stand-in's websocket, /ws and /api/ws, as server.py's websocket_handler: the
// session id from ?clientId= (a new one otherwise), a `status` message first, and, when the
// client's first message is its `feature_flags`, the server's own in answer. JSON messages are
// {type, data}; binary ones a 4-byte big-endian event type and the payload.
import { randomUUID } from 'node:crypto';
import { URL } from 'node:url';
import { WebSocketServer } from 'ws';

/** What comfy_api/feature_flags.py answers (no server_side_model_downloads: ComfyUI has none). */
export const SERVER_FEATURES = { supports_preview_metadata: true, max_upload_size: 104857600, extension: { manager: { supports_v4: true } } };

export function attachWebsocket(server, { queueInfo, onHandshake }) {
  const wss = new WebSocketServer({ noServer: true });
  const sockets = new Map();
  const clients = [];
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://stub');
    if (url.pathname !== '/ws' && url.pathname !== '/api/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    onHandshake(req);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const sid = url.searchParams.get('clientId') || randomUUID().replaceAll('-', '');
      sockets.get(sid)?.terminate();
      sockets.set(sid, ws);
      const client = { sid, featureFlags: undefined, messages: 0 };
      clients.push(client);
      let first = true;
      ws.on('message', (data, isBinary) => {
        client.messages++;
        if (isBinary) return;
        try {
          const msg = JSON.parse(data.toString());
          if (first && msg?.type === 'feature_flags') {
            client.featureFlags = msg.data ?? {};
            ws.send(JSON.stringify({ type: 'feature_flags', data: SERVER_FEATURES }));
          }
        } catch {
          // ComfyUI logs invalid JSON from a client and goes on.
        }
        first = false;
      });
      ws.on('close', () => {
        if (sockets.get(sid) === ws) sockets.delete(sid);
      });
      ws.send(JSON.stringify({ type: 'status', data: { status: queueInfo(), sid } }));
    });
  });
  const deliver = (ws, type, data) => {
    if (ws.readyState !== ws.OPEN) return;
    if (typeof type === 'number') {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(type);
      ws.send(Buffer.concat([head, data]), { binary: true });
    } else {
      ws.send(JSON.stringify({ type, data }));
    }
  };
  return {
    clients,
    /** sid undefined: every socket; a sid with no socket: nobody (as ComfyUI). */
    send(type, data, sid) {
      if (sid === undefined || sid === null) for (const ws of sockets.values()) deliver(ws, type, data);
      else if (sockets.has(sid)) deliver(sockets.get(sid), type, data);
    },
    close() {
      for (const ws of sockets.values()) ws.terminate();
      wss.close();
    },
  };
}
