// A small OPC UA server for Edgeport's connector tests and benchmark, built
// on node-opcua. Configuration comes as one JSON argument:
//
//   {"port":0, "pki":"/tmp/x/pki", "allowAnonymous":true,
//    "users":{"operator":"secret"}, "autoAccept":true, "bulk":0,
//    "bulkIntervalMs":100, "userPki":"/tmp/x/userpki",
//    "trustedUserCerts":["<base64 DER>"]}
//
// User certificates (X509IdentityToken) are checked against their own
// trust store, userPki (default: "userpki" beside pki), which never accepts
// an unknown certificate: only those in trustedUserCerts (or put into
// userPki/trusted/certs) log in; any other is refused with
// BadIdentityTokenRejected and lands in userPki/rejected.
//
// With bulk > 0 the per-publish notification limit is raised to bulk, or
// set to maxNotificationsPerPublish when given.
//
// It prints one line "READY <endpointUrl> <serverCertSha1>" on stdout when it
// listens, and exits when stdin closes (so a killed test never leaves it
// behind).
//
// Address space, namespace "urn:edgeport:test" (ns=2: ns=1 is node-opcua's own):
//   ns=2;s=Counter       Int32, +1 every 100 ms
//   ns=2;s=Temperature   Double, a sine wave sampled every 100 ms
//   ns=2;s=Level         Double analog item (EURange 0..100), +1 every 100 ms
//   ns=2;s=Constant      Double, never changes (heartbeat tests)
//   ns=2;s=Setpoint      Double, writable
//   ns=2;s=Running       Boolean true; s=Label String "line 1"; s=Started
//                        DateTime 2026-01-02T03:04:05Z; s=History Double[3]
//                        [1.5, 2.5, 3.5]; s=Total UInt64 7 (constants)
//   ns=2;s=Bulk/<i>      Double, bulk variables for the benchmark; each holds
//                        the current time in ms since the epoch, so a reader
//                        can measure source-to-consumer latency
//   ns=2;s=BulkChanges   Double, bulk value changes made since start
//   ns=2;s=Boiler        object, event notifier: a BaseEventType event every
//                        200 ms, severity alternating 100 and 800
//   ns=2;s=Boiler.Add    method (a Double, b Double) -> sum Double
"use strict";

const path = require("path");
const fs = require("fs");
const {
  OPCUAServer,
  OPCUACertificateManager,
  DataType,
  Variant,
  StatusCodes,
  makeRoles,
  WellKnownRoles,
} = require("node-opcua");

const cfg = JSON.parse(process.argv[2] || "{}");

async function main() {
  const pki = cfg.pki || path.join(process.cwd(), "pki");
  fs.mkdirSync(pki, { recursive: true });
  const serverCertificateManager = new OPCUACertificateManager({
    rootFolder: pki,
    automaticallyAcceptUnknownCertificate: cfg.autoAccept !== false,
  });
  await serverCertificateManager.initialize();

  const userCertificateManager = new OPCUACertificateManager({
    name: "UserPKI",
    rootFolder: cfg.userPki || path.join(path.dirname(pki), "userpki"),
    automaticallyAcceptUnknownCertificate: false,
  });
  await userCertificateManager.initialize();
  for (const b64 of cfg.trustedUserCerts || []) {
    await userCertificateManager.trustCertificate(Buffer.from(b64, "base64"));
  }

  const users = cfg.users || {};
  const userManager = {
    isValidUser(userName, password) {
      return Object.prototype.hasOwnProperty.call(users, userName) && users[userName] === password;
    },
    getUserRoles() {
      return makeRoles([WellKnownRoles.AuthenticatedUser, WellKnownRoles.Operator]);
    },
  };

  const server = new OPCUAServer({
    port: cfg.port || 0,
    host: "127.0.0.1",
    hostname: "127.0.0.1",
    allowAnonymous: cfg.allowAnonymous !== false,
    userManager,
    serverCertificateManager,
    userCertificateManager,
    buildInfo: { productName: "edgeport-test-server", buildNumber: "1" },
    serverInfo: { applicationUri: "urn:edgeport:test-server", applicationName: { text: "edgeport-test-server" } },
    maxConnectionsPerEndpoint: 1000,
    serverCapabilities: {
      maxSessions: 1000,
      maxMonitoredItemsPerSubscription: 200000,
      operationLimits: {
        maxMonitoredItemsPerCall: 200000,
        maxNodesPerRead: 200000,
        maxNodesPerBrowse: 200000,
      },
    },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const ns = addressSpace.registerNamespace("urn:edgeport:test");

  const folder = ns.addFolder(addressSpace.rootFolder.objects, { nodeId: "s=Plant", browseName: "Plant" });

  let counter = 0;
  const counterVar = ns.addVariable({
    componentOf: folder,
    nodeId: "s=Counter",
    browseName: "Counter",
    dataType: "Int32",
    minimumSamplingInterval: 50,
  });
  counterVar.setValueFromSource({ dataType: DataType.Int32, value: counter });
  setInterval(() => {
    counter++;
    counterVar.setValueFromSource({ dataType: DataType.Int32, value: counter });
  }, 100);

  // Level ramps 0..100 in steps of 1 every 100 ms: an analog item with an
  // EURange, so percent deadband applies to it.
  let level = 0;
  const levelVar = ns.addAnalogDataItem({
    componentOf: folder,
    nodeId: "s=Level",
    browseName: "Level",
    dataType: "Double",
    engineeringUnitsRange: { low: 0, high: 100 },
    minimumSamplingInterval: 50,
  });
  levelVar.setValueFromSource({ dataType: DataType.Double, value: level });
  setInterval(() => {
    level = (level + 1) % 100;
    levelVar.setValueFromSource({ dataType: DataType.Double, value: level });
  }, 100);

  const temperature = ns.addVariable({
    componentOf: folder,
    nodeId: "s=Temperature",
    browseName: "Temperature",
    dataType: "Double",
    minimumSamplingInterval: 50,
  });
  const t0 = Date.now();
  const setTemperature = () =>
    temperature.setValueFromSource({
      dataType: DataType.Double,
      value: 20 + 5 * Math.sin((Date.now() - t0) / 1000),
    });
  setTemperature();
  setInterval(setTemperature, 100);

  ns.addVariable({
    componentOf: folder,
    nodeId: "s=Constant",
    browseName: "Constant",
    dataType: "Double",
    accessLevel: "CurrentRead",
    userAccessLevel: "CurrentRead",
    value: { dataType: DataType.Double, value: 42 },
  });

  const setpoint = ns.addVariable({
    componentOf: folder,
    nodeId: "s=Setpoint",
    browseName: "Setpoint",
    dataType: "Double",
    accessLevel: "CurrentRead | CurrentWrite",
    userAccessLevel: "CurrentRead | CurrentWrite",
  });
  setpoint.setValueFromSource({ dataType: DataType.Double, value: 0 });

  // One variable of each further kind, for the schemas the connector
  // derives from DataType and ValueRank.
  ns.addVariable({ componentOf: folder, nodeId: "s=Running", browseName: "Running", dataType: "Boolean",
    value: { dataType: DataType.Boolean, value: true } });
  ns.addVariable({ componentOf: folder, nodeId: "s=Label", browseName: "Label", dataType: "String",
    value: { dataType: DataType.String, value: "line 1" } });
  ns.addVariable({ componentOf: folder, nodeId: "s=Started", browseName: "Started", dataType: "DateTime",
    value: { dataType: DataType.DateTime, value: new Date(Date.UTC(2026, 0, 2, 3, 4, 5)) } });
  ns.addVariable({ componentOf: folder, nodeId: "s=History", browseName: "History", dataType: "Double",
    valueRank: 1, arrayDimensions: [3],
    value: { dataType: DataType.Double, arrayType: require("node-opcua").VariantArrayType.Array, value: [1.5, 2.5, 3.5] } });
  ns.addVariable({ componentOf: folder, nodeId: "s=Total", browseName: "Total", dataType: "UInt64",
    value: { dataType: DataType.UInt64, arrayType: require("node-opcua").VariantArrayType.Scalar, value: [0, 7] } });

  const bulk = cfg.bulk || 0;
  if (bulk > 0) {
    // node-opcua sends at most 1000 notifications per publish response by
    // default; a benchmark with 10,000 items changing together needs all
    // of a cycle's changes in one response (servers differ here; the
    // client asks for up to 10,000).
    // maxNotificationsPerPublish keeps a smaller cap, as many servers have.
    require("node-opcua").Subscription.maxNotificationPerPublishHighLimit = cfg.maxNotificationsPerPublish || Math.max(1000, bulk);
    const bulkFolder = ns.addFolder(folder, { nodeId: "s=Bulk", browseName: "Bulk" });
    const vars = [];
    for (let i = 0; i < bulk; i++) {
      vars.push(
        ns.addVariable({
          componentOf: bulkFolder,
          nodeId: "s=Bulk/" + i,
          browseName: "B" + i,
          dataType: "Double",
          value: { dataType: DataType.Double, value: 0 },
        })
      );
    }
    // BulkChanges counts the value changes made so far: a benchmark reads
    // it before and after its window to know what the server generated
    // (an overloaded Node.js event loop runs the timer late, so it can
    // generate less than bulk per interval).
    let changes = 0;
    ns.addVariable({
      componentOf: bulkFolder,
      nodeId: "s=BulkChanges",
      browseName: "BulkChanges",
      dataType: "Double",
      value: { get: () => new Variant({ dataType: DataType.Double, value: changes }) },
    });
    setInterval(() => {
      const now = Date.now();
      for (const v of vars) {
        v.setValueFromSource({ dataType: DataType.Double, value: now });
      }
      changes += vars.length;
    }, cfg.bulkIntervalMs || 100);
  }

  const boiler = ns.addObject({
    organizedBy: folder,
    nodeId: "s=Boiler",
    browseName: "Boiler",
    eventNotifier: 1,
    notifierOf: addressSpace.rootFolder.objects.server,
  });
  let eventNo = 0;
  setInterval(() => {
    eventNo++;
    boiler.raiseEvent("BaseEventType", {
      message: { dataType: DataType.LocalizedText, value: { text: "boiler event " + eventNo } },
      severity: { dataType: DataType.UInt16, value: eventNo % 2 === 0 ? 800 : 100 },
    });
  }, 200);

  const add = ns.addMethod(boiler, {
    nodeId: "s=Boiler.Add",
    browseName: "Add",
    inputArguments: [
      { name: "a", dataType: DataType.Double },
      { name: "b", dataType: DataType.Double },
    ],
    outputArguments: [{ name: "sum", dataType: DataType.Double }],
  });
  add.bindMethod((inputArguments, context, callback) => {
    const sum = inputArguments[0].value + inputArguments[1].value;
    callback(null, {
      statusCode: StatusCodes.Good,
      outputArguments: [{ dataType: DataType.Double, value: sum }],
    });
  });

  await server.start();
  const url = server.getEndpointUrl();
  const thumb = server.getCertificate
    ? require("crypto").createHash("sha1").update(server.getCertificate()).digest("hex")
    : "";
  process.stdout.write("READY " + url + " " + thumb + "\n");

  const stop = async () => {
    try {
      await server.shutdown(0);
    } finally {
      process.exit(0);
    }
  };
  process.stdin.on("end", stop);
  process.stdin.on("close", stop);
  process.stdin.resume();
  process.on("SIGTERM", stop);
}

main().catch((err) => {
  process.stderr.write("server failed: " + (err && err.stack ? err.stack : err) + "\n");
  process.exit(1);
});
