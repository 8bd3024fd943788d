'use strict'
// Waits, connected with MQTT.js over MQTT 5, for the server to disconnect.
// argv[2] is the broker URL. Prints one JSON line per event: "ready" once
// subscribed, "disconnect" with the reason code of a server DISCONNECT, and
// "close" when the connection ends, after which the script exits.

const mqtt = require('mqtt')

const client = mqtt.connect(process.argv[2], {
  protocolVersion: 5,
  clientId: 'node-shutdown',
  clean: true,
  reconnectPeriod: 0,
  connectTimeout: 10000
})

function emit (obj) {
  process.stdout.write(JSON.stringify(obj) + '\n')
}

client.on('connect', () => {
  client.subscribe('shutdown/node', { qos: 1 }, (err) => {
    if (err) {
      process.stderr.write('subscribe: ' + err + '\n')
      process.exit(1)
    }
    emit({ event: 'ready' })
  })
})
client.on('disconnect', (packet) => emit({ event: 'disconnect', reasonCode: packet.reasonCode }))
client.on('close', () => {
  emit({ event: 'close' })
  process.exit(0)
})
client.on('error', (err) => process.stderr.write('error: ' + err + '\n'))
