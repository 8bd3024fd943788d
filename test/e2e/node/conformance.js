'use strict'
// MQTT 3.1, 3.1.1 and 5.0 conformance scenarios run with MQTT.js against a
// running broker. Usage: node conformance.js URL SCENARIO PREFIX (SCENARIO
// "list" prints the names). Each scenario asserts what the specification
// requires (normative statements of the OASIS MQTT 5.0 and 3.1.1
// specifications cited beside it) and the script prints "PASS <scenario>";
// the Go test TestMQTTJSConformance runs each one as a subtest.
//
// No fixed sleeps: waits are on events with a deadline, and "nothing else
// arrived" is proved with a barrier, a QoS 2 message published after the
// one that must not arrive. MQTT.js emits a QoS 2 message at PUBREL, after
// everything the broker sent before it.

const assert = require('assert/strict')
const mqtt = require('mqtt')

const TIMEOUT_MS = 10000
let URL = ''
let PREFIX = ''

function t (...parts) { return [PREFIX, ...parts].join('/') }

// plain drops the null prototype MQTT.js gives user property objects.
function plain (o) { return JSON.parse(JSON.stringify(o)) }

function deadline (promise, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('timed out: ' + what)), TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

// Peer is one MQTT.js client recording what arrives.
class Peer {
  static async connect (name, opts = {}) {
    const p = new Peer()
    p.name = name
    p.messages = []
    p.waiters = []
    // The listener goes on before CONNECT: a resumed session's messages
    // follow CONNACK in the same read, before connectAsync would resolve.
    p.client = mqtt.connect(URL, Object.assign({
      clientId: name,
      protocolVersion: 5,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: TIMEOUT_MS
    }, opts))
    p.client.on('message', (topic, payload, packet) => {
      p.messages.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, dup: packet.dup, properties: packet.properties || {} })
      p.wake()
    })
    await deadline(new Promise((resolve, reject) => {
      p.client.once('connect', resolve)
      p.client.once('error', reject)
    }), 'connect ' + name)
    p.client.on('error', () => {}) // later refusals are judged from the packets
    return p
  }

  get connack () { return this.client.connackPacket || {} }

  wake () {
    for (const w of this.waiters.splice(0)) w()
  }

  async until (what, pred) {
    const end = Date.now() + TIMEOUT_MS
    while (!pred()) {
      if (Date.now() > end) throw new Error(this.name + ': timed out waiting for ' + what + '; have ' + JSON.stringify(this.messages))
      await new Promise((resolve) => {
        this.waiters.push(resolve)
        setTimeout(resolve, 50)
      })
    }
  }

  async received (n) {
    await this.until(n + ' messages', () => this.messages.length >= n)
    return this.messages.slice()
  }

  // barrier publishes a QoS 2 marker through pub on topic (which this peer
  // takes at QoS 2) and returns what arrived before it.
  async barrier (pub, topic) {
    const token = 'barrier-' + process.hrtime.bigint()
    await pub.client.publishAsync(topic, token, { qos: 2 })
    await this.until('barrier on ' + topic, () => this.messages.some((m) => m.payload === token))
    const got = this.messages.filter((m) => m.payload !== token)
    this.messages = []
    return got
  }

  async sub (filters, opts = {}) {
    const granted = await deadline(this.client.subscribeAsync(filters, opts), 'subscribe')
    return granted.map((g) => g.qos)
  }

  async end () {
    await deadline(this.client.endAsync(), 'end ' + this.name)
  }

  // drop ends the connection without DISCONNECT.
  async drop () {
    const closed = new Promise((resolve) => this.client.once('close', resolve))
    this.client.stream.destroy()
    await deadline(closed, 'close ' + this.name)
    this.client.end(true)
  }
}

const scenarios = {
  // A resumed session keeps its subscriptions with their identifiers and
  // options, and what arrived while offline [MQTT-3.1.2-23] [MQTT-4.5.0-1];
  // resubscribing with Retain Handling 1 sends no retained message for the
  // existing subscription [MQTT-3.3.1-10].
  async v5_session_resume () {
    const pub = await Peer.connect(t('pub'))
    await pub.client.publishAsync(t('sr', 'kept'), 'kept', { qos: 1, retain: true })
    const opts = { clean: false, properties: { sessionExpiryInterval: 300 } }
    let sub = await Peer.connect(t('sr'), Object.assign({}, opts, { clean: true }))
    await sub.sub({ [t('sr', '+')]: { qos: 2, rh: 0 } }, { properties: { subscriptionIdentifier: 42 } })
    assert.equal((await sub.received(1))[0].payload, 'kept')
    await sub.end()
    for (const q of [1, 2]) await pub.client.publishAsync(t('sr', 'm'), 'q' + q, { qos: q })
    sub = await Peer.connect(t('sr'), opts)
    assert.equal(sub.connack.sessionPresent, true, 'session present')
    await sub.sub({ [t('sr', '+')]: { qos: 2, rh: 1 } }, { properties: { subscriptionIdentifier: 42 } })
    const got = await sub.barrier(pub, t('sr', 'bar'))
    assert.deepEqual(got.map((m) => [m.payload, m.qos, m.properties.subscriptionIdentifier]).sort(),
      [['q1', 1, 42], ['q2', 2, 42]], 'queued messages with the subscription identifier, no retained one')
    await pub.client.publishAsync(t('sr', 'kept'), '', { qos: 1, retain: true })
    await sub.end()
    await pub.end()
  },

  // Will Delay Interval 0: the will goes out as the connection drops
  // [MQTT-3.1.2-8], the session stays [MQTT-3.1.3-9]; a will with a
  // Message Expiry Interval carries it [MQTT-3.1.3-?]; the will's retain
  // flag stores it [MQTT-3.1.2-17].
  async v5_will () {
    const watch = await Peer.connect(t('watch'))
    await watch.sub({ [t('w', '#')]: { qos: 2 } })
    const c = await Peer.connect(t('w'), {
      properties: { sessionExpiryInterval: 60 },
      will: { topic: t('w', 'gone'), payload: 'bye', qos: 1, retain: true, properties: { messageExpiryInterval: 120, contentType: 'text/plain', userProperties: { a: '1' } } }
    })
    await c.drop()
    const m = (await watch.received(1))[0]
    assert.equal(m.payload, 'bye')
    assert.equal(m.properties.contentType, 'text/plain')
    assert.deepEqual(plain(m.properties.userProperties), { a: '1' })
    assert.ok(m.properties.messageExpiryInterval > 0 && m.properties.messageExpiryInterval <= 120, 'will expiry ' + m.properties.messageExpiryInterval)
    const late = await Peer.connect(t('late'))
    await late.sub({ [t('w', 'gone')]: { qos: 1 } })
    const r = (await late.received(1))[0]
    assert.deepEqual([r.payload, r.retain], ['bye', true], 'retained will')
    await watch.client.publishAsync(t('w', 'gone'), '', { qos: 1, retain: true })
    const back = await Peer.connect(t('w'), { clean: false, properties: { sessionExpiryInterval: 0 } })
    assert.equal(back.connack.sessionPresent, true, 'session kept after the will')
    for (const p of [back, late, watch]) await p.end()
  },

  // Request/response: Response Information when asked [MQTT-3.1.2-28],
  // Response Topic and Correlation Data unaltered [MQTT-3.3.2-15]
  // [MQTT-3.3.2-16], user properties in order [MQTT-3.3.2-18].
  async v5_request_response () {
    const req = await Peer.connect(t('req'), { properties: { requestResponseInformation: true } })
    const info = req.connack.properties && req.connack.properties.responseInformation
    assert.ok(info, 'no Response Information in CONNACK')
    const svc = await Peer.connect(t('svc'))
    await svc.sub({ [t('rr')]: { qos: 1 } })
    svc.client.on('message', (topic, payload, packet) => {
      svc.client.publish(packet.properties.responseTopic, 'pong:' + payload, {
        qos: 1, properties: { correlationData: packet.properties.correlationData, userProperties: packet.properties.userProperties }
      })
    })
    await req.sub({ [info + '/#']: { qos: 1 } })
    await req.client.publishAsync(t('rr'), 'ping', {
      qos: 1, properties: { responseTopic: info + '/r', correlationData: Buffer.from([0, 1, 2]), userProperties: { z: '1', a: ['2', '3'] } }
    })
    const m = (await req.received(1))[0]
    assert.equal(m.payload, 'pong:ping')
    assert.deepEqual([...m.properties.correlationData], [0, 1, 2])
    assert.deepEqual(plain(m.properties.userProperties), { z: '1', a: ['2', '3'] })
    await req.end()
    await svc.end()
  },

  // Overlapping subscriptions in 3.1.1: one message at the highest QoS
  // [MQTT-3.3.5-1]; RETAIN 0 on live delivery [MQTT-3.3.1-9].
  async v311_overlapping () {
    const c = await Peer.connect(t('ov'), { protocolVersion: 4 })
    await c.sub({ [t('ov', '#')]: { qos: 2 }, [t('ov', '+')]: { qos: 0 } })
    await c.client.publishAsync(t('ov', 'x'), 'one', { qos: 2, retain: true })
    const got = await c.barrier(c, t('ov', 'bar'))
    assert.deepEqual(got.map((m) => [m.payload, m.qos, m.retain]), [['one', 2, false]])
    await c.client.publishAsync(t('ov', 'x'), '', { qos: 1, retain: true })
    await c.end()
  },

  // 3.1.1 persistent session: QoS 1 and 2 queued while offline, in order
  // per QoS, session present [MQTT-3.1.2-5] [MQTT-3.2.2-2]; the will after
  // an abnormal end [MQTT-3.1.2-8].
  async v311_session_and_will () {
    const opts = { protocolVersion: 4, clean: false }
    let sub = await Peer.connect(t('s3'), opts)
    await sub.sub({ [t('s3', '#')]: { qos: 2 } })
    await sub.end()
    const pub = await Peer.connect(t('p3'), { protocolVersion: 4, will: { topic: t('s3', 'will'), payload: 'gone', qos: 2 } })
    for (let i = 0; i < 4; i++) await pub.client.publishAsync(t('s3', 'm'), 'm' + i, { qos: 1 + (i % 2) })
    sub = await Peer.connect(t('s3'), opts)
    assert.equal(sub.connack.sessionPresent, true)
    const got = await sub.received(4)
    assert.deepEqual(got.filter((m) => m.qos === 1).map((m) => m.payload), ['m0', 'm2'])
    assert.deepEqual(got.filter((m) => m.qos === 2).map((m) => m.payload), ['m1', 'm3'])
    sub.messages = []
    await pub.drop()
    assert.deepEqual((await sub.received(1)).map((m) => [m.topic, m.payload, m.qos]), [[t('s3', 'will'), 'gone', 2]])
    await sub.end()
    const clean = await Peer.connect(t('s3'), { protocolVersion: 4, clean: true })
    assert.equal(clean.connack.sessionPresent, false)
    await clean.end()
  },

  // MQTT 3.1 (MQIsdp, level 3) clients are served like 3.1.1 ones.
  async v31_basic () {
    const c = await Peer.connect(t('v31'), { protocolId: 'MQIsdp', protocolVersion: 3 })
    assert.deepEqual(await c.sub({ [t('v31', '#')]: { qos: 2 } }), [2])
    for (const q of [0, 1, 2]) await c.client.publishAsync(t('v31', 'q'), 'q' + q, { qos: q })
    const got = await c.received(3)
    assert.deepEqual(got.map((m) => m.payload).sort(), ['q0', 'q1', 'q2'])
    await c.end()
  }
}

async function main () {
  const [url, name, prefix] = process.argv.slice(2)
  if (url === 'list') {
    console.log(Object.keys(scenarios).join('\n'))
    return
  }
  URL = url
  PREFIX = prefix
  await scenarios[name]()
  console.log('PASS ' + name)
}

main().then(() => process.exit(0), (err) => {
  console.error(err && err.stack ? err.stack : err)
  process.exit(1)
})
