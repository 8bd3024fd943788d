'use strict'
// Round trip through Edgeport with MQTT.js. The configuration comes as JSON
// in argv[2]: {url, protocolVersion, prefix, count, bigSize, aliases, ca}; ca
// is the path of a CA file to trust for mqtts:// and wss://. A subscriber
// takes PREFIX/# at QoS 2; a publisher sends COUNT messages cycling through
// QoS 0, 1 and 2 (MQTT 5: with user properties and correlation data), then,
// when bigSize > 0, one QoS 1 message of bigSize bytes. With aliases (MQTT 5)
// both directions use topic aliases: the publisher assigns them and the
// subscriber accepts up to four from the broker; QoS then cycles through 0
// and 1 only, because MQTT.js 5.16.0 emits an aliased QoS 2 message at PUBREL
// with the empty topic of the packet. Prints one JSON
// object describing what arrived; the Go test judges it.

const crypto = require('crypto')
const fs = require('fs')
const mqtt = require('mqtt')

const TIMEOUT_MS = 10000

function sha256 (buf) {
  return crypto.createHash('sha256').update(buf).digest('hex')
}

function withTimeout (promise, what) {
  let timer
  const timeout = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error('timed out: ' + what)), TIMEOUT_MS)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}

async function connect (cfg, name, extra) {
  return withTimeout(mqtt.connectAsync(cfg.url, Object.assign({
    protocolVersion: cfg.protocolVersion,
    clientId: cfg.prefix + '-' + name,
    clean: true,
    reconnectPeriod: 0,
    connectTimeout: TIMEOUT_MS
  }, cfg.ca ? { ca: fs.readFileSync(cfg.ca) } : {}, extra)), 'connect ' + name)
}

async function main () {
  const cfg = JSON.parse(process.argv[2])
  const v5 = cfg.protocolVersion === 5
  const total = cfg.count + (cfg.bigSize > 0 ? 1 : 0)

  const sub = await connect(cfg, 'sub', cfg.aliases ? { properties: { topicAliasMaximum: 4 } } : {})
  const received = []
  let aliasedIn = 0
  let allArrived
  const arrived = new Promise((resolve) => { allArrived = resolve })
  sub.on('message', (topic, payload, packet) => {
    const m = { topic, qos: packet.qos, retain: packet.retain, length: payload.length, sha256: sha256(payload) }
    if (payload.length <= 1024) m.payload = payload.toString()
    const props = packet.properties || {}
    if (props.topicAlias) aliasedIn++
    if (props.userProperties) m.userProperties = props.userProperties
    if (props.correlationData) m.correlationData = Buffer.from(props.correlationData).toString()
    received.push(m)
    if (received.length >= total) allArrived()
  })
  const granted = await withTimeout(sub.subscribeAsync(cfg.prefix + '/#', { qos: 2 }), 'subscribe')

  const pub = await connect(cfg, 'pub', cfg.aliases ? { autoAssignTopicAlias: true } : {})
  const sends = []
  const levels = cfg.aliases ? 2 : 3
  for (let i = 0; i < cfg.count; i++) {
    const opts = { qos: i % levels }
    if (v5) {
      opts.properties = {
        userProperties: { seq: String(i), tags: ['a', 'b'] },
        correlationData: Buffer.from('corr-' + i)
      }
    }
    sends.push(pub.publishAsync(cfg.prefix + '/live/' + (i % levels), 'msg-' + i, opts))
  }
  let bigSha256
  if (cfg.bigSize > 0) {
    const big = Buffer.alloc(cfg.bigSize)
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) % 251
    bigSha256 = sha256(big)
    sends.push(pub.publishAsync(cfg.prefix + '/big', big, { qos: 1 }))
  }
  await withTimeout(Promise.all(sends), 'publish acknowledgements')
  await withTimeout(arrived, total + ' messages')

  await Promise.all([sub.endAsync(), pub.endAsync()])
  process.stdout.write(JSON.stringify({ granted: granted.map((g) => g.qos), received, aliasedIn, bigSha256 }) + '\n')
}

main().then(() => process.exit(0), (err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n')
  process.exit(1)
})
