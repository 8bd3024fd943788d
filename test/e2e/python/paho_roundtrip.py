"""Round trip through Edgeport with Eclipse Paho Python (Debian's 1.6.1).

Usage: paho_roundtrip.py HOST PORT VERSION PREFIX COUNT
VERSION is 5 or 311. A subscriber takes PREFIX/# at QoS 2, a publisher sends
COUNT messages cycling through QoS 0, 1 and 2 (with a user property in MQTT 5)
and a retained message, then a late subscriber collects the retained one.
Prints one JSON object with what each client saw; the Go test judges it.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 10.0


def code(rc):
    # MQTT 5 callbacks hand over ReasonCodes objects, 3.1.1 ones plain ints.
    return rc.value if hasattr(rc, "value") else int(rc)


class Peer:
    """One connected client whose callbacks record into plain lists."""

    def __init__(self, name, host, port, v5):
        self.v5 = v5
        kwargs = {"protocol": mqtt.MQTTv5} if v5 else {"protocol": mqtt.MQTTv311, "clean_session": True}
        self.client = mqtt.Client(client_id=name, **kwargs)
        self.client.max_inflight_messages_set(1000)
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.connack = None
        self.granted = None
        self.messages = []
        self.lock = threading.Lock()
        self.enough = threading.Event()
        self.want = 0
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message
        if v5:
            self.client.connect(host, port, keepalive=30, clean_start=True)
        else:
            self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise RuntimeError(name + ": no CONNACK")

    def on_connect(self, client, userdata, flags, rc, properties=None):
        self.connack = code(rc)
        self.connected.set()

    def on_subscribe(self, client, userdata, mid, granted, properties=None):
        self.granted = [code(g) for g in granted]
        self.subscribed.set()

    def on_message(self, client, userdata, msg):
        m = {
            "topic": msg.topic,
            "payload": msg.payload.decode(),
            "qos": msg.qos,
            "retain": bool(msg.retain),
        }
        props = getattr(msg, "properties", None)
        if props is not None and hasattr(props, "UserProperty"):
            m["user"] = [list(kv) for kv in props.UserProperty]
        with self.lock:
            self.messages.append(m)
            if len(self.messages) >= self.want:
                self.enough.set()

    def subscribe(self, topic, want):
        self.want = want
        self.client.subscribe(topic, qos=2)
        if not self.subscribed.wait(TIMEOUT):
            raise RuntimeError("no SUBACK for " + topic)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def main():
    host, port, version, prefix, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    v5 = version == "5"
    result = {}

    sub = Peer(prefix + "-sub", host, port, v5)
    sub.subscribe(prefix + "/live/#", count)
    pub = Peer(prefix + "-pub", host, port, v5)

    infos = []
    for i in range(count):
        props = None
        if v5:
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = ("seq", str(i))
        infos.append(pub.client.publish("%s/live/%d" % (prefix, i % 3), "msg-%d" % i, qos=i % 3, properties=props))
    retained = pub.client.publish(prefix + "/kept", "retained-payload", qos=1, retain=True)
    for info in infos + [retained]:
        info.wait_for_publish(TIMEOUT)
    result["published"] = sum(1 for info in infos if info.is_published())
    sub.enough.wait(TIMEOUT)

    late = Peer(prefix + "-late", host, port, v5)
    late.subscribe(prefix + "/kept", 1)
    late.enough.wait(TIMEOUT)

    result["connack"] = [sub.connack, pub.connack, late.connack]
    result["granted"] = sub.granted
    with sub.lock:
        result["received"] = list(sub.messages)
    with late.lock:
        result["retained"] = list(late.messages)
    for p in (sub, pub, late):
        p.close()
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
