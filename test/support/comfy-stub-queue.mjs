// The ComfyUI stand-in's prompt queue: one prompt at a time, in `number` order, announced on the
// websocket as ComfyUI's execution.py does (execution_start, executing per node, executing with
// node null, execution_success), kept in /history once done. A prompt whose extra_data has
// `stub_hold: true` runs until POST /stub/release names it, so tests decide when it ends.
import { clearTimeout, setImmediate } from 'node:timers';

export class PromptQueue {
  /** `send(type, data, sid)`: sid undefined broadcasts, like PromptServer.send_sync. */
  constructor(send, runMs) {
    this.send = send;
    this.runMs = runMs;
    this.pending = [];
    this.running = undefined;
    this.history = new Map();
    this.released = new Set();
  }

  put(item) {
    this.pending.push(item);
    this.pending.sort((a, b) => a.number - b.number);
    this.updated();
    setImmediate(() => this.next());
  }

  remaining() {
    return this.pending.length + (this.running ? 1 : 0);
  }

  /** GET /queue: [number, prompt_id, prompt, extra_data, outputs] per item, as ComfyUI lists them. */
  current() {
    const row = (i) => [i.number, i.prompt_id, i.prompt, i.extra_data, Object.keys(i.prompt)];
    return { queue_running: this.running ? [row(this.running)] : [], queue_pending: this.pending.map(row) };
  }

  remove(ids) {
    this.pending = this.pending.filter((i) => !ids.includes(i.prompt_id));
    this.updated();
  }

  clear() {
    this.pending = [];
    this.updated();
  }

  interrupt() {
    const r = this.running;
    if (!r) return;
    r.interrupted = true;
    this.finish(r);
  }

  /** End the running prompt with this id; one not running yet will not be held when it runs. */
  release(id) {
    if (this.running?.prompt_id === id) this.finish(this.running);
    else this.released.add(id);
  }

  next() {
    if (this.running || this.pending.length === 0) return;
    const item = this.pending.shift();
    this.running = item;
    const sid = item.extra_data.client_id;
    const p = { prompt_id: item.prompt_id };
    this.send('execution_start', { ...p, timestamp: Date.now() }, sid);
    this.send('execution_cached', { nodes: [], ...p, timestamp: Date.now() }, sid);
    for (const node of Object.keys(item.prompt)) this.send('executing', { node, display_node: node, ...p }, sid);
    // A preview frame, as KSampler sends while it samples: binary type 1 (JPEG) plus the bytes.
    this.send(1, Buffer.from([0xff, 0xd8, 0xff, 0xd9]), sid);
    if (item.extra_data.stub_hold === true && !this.released.delete(item.prompt_id)) return;
    item.timer = setTimeout(() => this.finish(item), this.runMs);
  }

  finish(item) {
    if (this.running !== item) return;
    clearTimeout(item.timer);
    this.running = undefined;
    const sid = item.extra_data.client_id;
    const p = { prompt_id: item.prompt_id };
    const messages = [['execution_start', { ...p, timestamp: Date.now() }]];
    if (item.interrupted) {
      const last = Object.keys(item.prompt).at(-1) ?? null;
      this.send('execution_interrupted', { ...p, node_id: last, node_type: last ? item.prompt[last].class_type : null, executed: [], timestamp: Date.now() }, sid);
      messages.push(['execution_interrupted', { ...p, timestamp: Date.now() }]);
    } else {
      this.send('executing', { node: null, display_node: null, ...p }, sid);
      this.send('execution_success', { ...p, timestamp: Date.now() }, sid);
      messages.push(['execution_success', { ...p, timestamp: Date.now() }]);
    }
    this.history.set(item.prompt_id, {
      prompt: [item.number, item.prompt_id, item.prompt, item.extra_data, Object.keys(item.prompt)],
      outputs: {},
      status: { status_str: item.interrupted ? 'error' : 'success', completed: !item.interrupted, messages },
      meta: {},
    });
    this.updated();
    setImmediate(() => this.next());
  }

  updated() {
    this.send('status', { status: { exec_info: { queue_remaining: this.remaining() } } }, undefined);
  }
}
