// The classic Node.js "array of responses" SSE server, as a floor for
// herald's benchmarks: no framework, no queue, no history. Each channel is an
// array of open `res` objects and every event is one res.write() per
// subscriber. Same URL shape as herald:
//   GET  /v1/events?topic=T                       -> text/event-stream
//   POST /v1/publish {"topic":"T","data":<json>}  -> 202 {"id":"N"}
// Usage: node server.js [port]   (port 0 picks one; the bound port is printed)
'use strict';
const http = require('http');

const channels = new Map(); // topic -> array of ServerResponse
let nextId = 0;

function subscribe(req, res, topic) {
  res.writeHead(200, {
    'Content-Type': 'text/event-stream',
    'Cache-Control': 'no-cache',
    'X-Accel-Buffering': 'no',
  });
  res.write('retry: 2000\n: floor stream open\n\n');
  let subs = channels.get(topic);
  if (!subs) {
    subs = [];
    channels.set(topic, subs);
  }
  subs.push(res);
  req.on('close', () => {
    const i = subs.indexOf(res);
    if (i >= 0) subs.splice(i, 1);
    if (subs.length === 0) channels.delete(topic);
  });
}

function publish(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let msg;
    try {
      msg = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    } catch (e) {
      res.writeHead(400, { 'Content-Type': 'text/plain', 'Content-Length': 8 });
      res.end('bad json');
      return;
    }
    const id = String(++nextId);
    const data = typeof msg.data === 'string' ? msg.data : JSON.stringify(msg.data);
    const frame = 'id: ' + id + '\ndata: ' + data.split('\n').join('\ndata: ') + '\n\n';
    const subs = channels.get(msg.topic);
    if (subs) {
      for (let i = 0; i < subs.length; i++) subs[i].write(frame);
    }
    const body = '{"id":"' + id + '"}';
    res.writeHead(202, { 'Content-Type': 'application/json', 'Content-Length': body.length });
    res.end(body);
  });
}

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/v1/events') {
    const topic = url.searchParams.get('topic');
    if (!topic) {
      res.writeHead(400);
      res.end();
      return;
    }
    subscribe(req, res, topic);
  } else if (req.method === 'POST' && url.pathname === '/v1/publish') {
    publish(req, res);
  } else {
    res.writeHead(404);
    res.end();
  }
});
server.keepAliveTimeout = 300000;
server.headersTimeout = 0;
server.requestTimeout = 0;
server.maxConnections = 100000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', 4096, () => {
  console.error('floor listening addr=127.0.0.1:' + server.address().port);
});
