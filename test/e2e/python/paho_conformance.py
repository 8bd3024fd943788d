"""MQTT 3.1.1 and 5.0 conformance scenarios run with Eclipse Paho Python
(Debian's 1.6.1) against a running broker.

Usage: paho_conformance.py HOST PORT SCENARIO PREFIX
Runs one scenario (see SCENARIOS), raising AssertionError with what differed
from the specification; prints "PASS <scenario>" when every check held. The
Go test TestPahoPythonConformance runs each scenario as a subtest.

Nothing here sleeps for a fixed time: waits are on events with a deadline,
and "nothing else arrived" is proved with a barrier, a QoS 2 message sent
after the one that must not arrive. Paho hands a QoS 2 message to the
application at PUBREL, after everything the broker sent before it, so once
the barrier is in, anything sent earlier would be too.

Normative statement numbers are those of the OASIS MQTT 5.0 and 3.1.1
specifications.
"""

import socket
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

TIMEOUT = 10.0
HOST = "127.0.0.1"
PORT = 1883
PREFIX = "conf"


def code(rc):
    """MQTT 5 callbacks hand over ReasonCodes objects, 3.1.1 ones plain ints."""
    return rc.value if hasattr(rc, "value") else int(rc)


def props(kind, **kw):
    p = Properties(kind)
    for k, v in kw.items():
        setattr(p, k, v)
    return p


class Peer:
    """One client whose callbacks record into lists guarded by a condition."""

    def __init__(self, name, v5=True, **connect):
        self.name = name
        self.v5 = v5
        if v5:
            self.client = mqtt.Client(client_id=name, protocol=mqtt.MQTTv5)
        else:
            self.client = mqtt.Client(client_id=name, protocol=mqtt.MQTTv311,
                                      clean_session=connect.pop("clean_session", True))
        self.client.max_inflight_messages_set(100)
        self.cond = threading.Condition()
        self.connacks = []     # (session present, reason code, properties)
        self.messages = []     # paho MQTTMessage objects
        self.subacks = {}      # mid -> [reason codes]
        self.unsubacks = {}    # mid -> [reason codes]
        self.disconnects = []  # reason codes
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_unsubscribe = self._on_unsubscribe
        self.client.on_disconnect = self._on_disconnect
        self.connect(**connect)

    # --- callbacks (paho's network thread) ---
    def _note(self, f):
        with self.cond:
            f()
            self.cond.notify_all()

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        self._note(lambda: self.connacks.append((bool(flags.get("session present")), code(rc), properties)))

    def _on_message(self, client, userdata, msg):
        self._note(lambda: self.messages.append(msg))

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        self._note(lambda: self.subacks.__setitem__(mid, [code(g) for g in granted]))

    def _on_unsubscribe(self, client, userdata, mid, properties=None, reasons=None):
        codes = [code(r) for r in reasons] if isinstance(reasons, list) else []
        self._note(lambda: self.unsubacks.__setitem__(mid, codes))

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self._note(lambda: self.disconnects.append(code(rc)))

    # --- waiting ---
    def wait(self, what, pred):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s: timed out waiting for %s (messages %s, disconnects %s)" % (
                        self.name, what, [describe(m) for m in self.messages], self.disconnects))
                self.cond.wait(left)

    # --- actions ---
    def connect(self, clean=True, expiry=None, keepalive=30, will=None, **connect_props):
        n = len(self.connacks)
        kw = {}
        if self.v5:
            p = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                p.SessionExpiryInterval = expiry
            for k, v in connect_props.items():
                setattr(p, k, v)
            kw = {"clean_start": clean, "properties": p}
        if will is not None:
            self.client.will_set(**will)
        self.client.connect(HOST, PORT, keepalive=keepalive, **kw)
        self.client.loop_start()
        self.wait("CONNACK", lambda: len(self.connacks) > n)
        return self.connacks[-1]

    def subscribe(self, *filters, sub_id=None):
        """filters: (filter, qos or SubscribeOptions); returns the SUBACK codes."""
        kw = {}
        if sub_id is not None:
            kw["properties"] = props(PacketTypes.SUBSCRIBE, SubscriptionIdentifier=sub_id)
        if self.v5:
            rc, mid = self.client.subscribe([(f, o if isinstance(o, SubscribeOptions) else SubscribeOptions(qos=o))
                                             for f, o in filters], **kw)
        else:
            rc, mid = self.client.subscribe(list(filters))
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self.wait("SUBACK", lambda: mid in self.subacks)
        return self.subacks[mid]

    def unsubscribe(self, *filters):
        rc, mid = self.client.unsubscribe(list(filters))
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self.wait("UNSUBACK", lambda: mid in self.unsubacks)
        return self.unsubacks[mid]

    def publish(self, topic, payload, qos=0, retain=False, **publish_props):
        p = props(PacketTypes.PUBLISH, **publish_props) if publish_props else None
        info = self.client.publish(topic, payload, qos=qos, retain=retain, properties=p)
        if qos > 0:
            info.wait_for_publish(TIMEOUT)
            assert info.is_published(), "%s: no acknowledgement for %s" % (self.name, topic)

    def received(self, n, what="messages"):
        self.wait("%d %s" % (n, what), lambda: len(self.messages) >= n)
        return list(self.messages)

    def barrier(self, publisher, topic):
        """Sends a QoS 2 barrier on topic (which this peer must be subscribed
        to at QoS 2) and returns what arrived before it, barrier excluded."""
        token = "barrier-%d" % time.monotonic_ns()
        publisher.publish(topic, token, qos=2)
        self.wait("barrier " + topic, lambda: any(m.payload == token.encode() for m in self.messages))
        with self.cond:
            got = [m for m in self.messages if m.payload != token.encode()]
            self.messages.clear()
        return got

    def clear(self):
        with self.cond:
            self.messages.clear()

    def disconnect(self, reason=None, **disconnect_props):
        kw = {}
        if reason is not None:
            kw["reasoncode"] = mqtt.ReasonCodes(PacketTypes.DISCONNECT, identifier=reason)
        if disconnect_props:
            kw["properties"] = props(PacketTypes.DISCONNECT, **disconnect_props)
        n = len(self.disconnects)
        self.client.disconnect(**kw)
        self.wait("connection end", lambda: len(self.disconnects) > n)
        self.client.loop_stop()

    def drop(self):
        """Ends the connection without DISCONNECT, as a crashed client would."""
        n = len(self.disconnects)
        self.client.socket().shutdown(socket.SHUT_RDWR)
        self.wait("connection end", lambda: len(self.disconnects) > n)
        self.client.loop_stop()


def describe(m):
    p = getattr(m, "properties", None)
    return (m.topic, m.payload, m.qos, bool(m.retain), str(p) if p is not None else None)


def user_props(m):
    p = getattr(m, "properties", None)
    return [tuple(kv) for kv in getattr(p, "UserProperty", [])] if p is not None else []


def eq(got, want, what):
    assert got == want, "%s: got %r, want %r" % (what, got, want)


def t(*parts):
    return "/".join((PREFIX,) + parts)


# ---------------------------------------------------------------- MQTT 5.0

def v5_retained():
    """Retained messages keep QoS, properties and are sent with RETAIN set
    on subscription [MQTT-3.3.1-5] [MQTT-3.3.1-9]; an empty retained message
    clears one [MQTT-3.3.1-6] and is itself delivered to live subscribers
    [MQTT-3.3.1-10]."""
    pub = Peer(t("pub"))
    for q in range(3):
        pub.publish(t("ret", str(q)), "r%d" % q, qos=q, retain=True, UserProperty=[("a", "2"), ("c", "3")])
    sub = Peer(t("sub"))
    eq(sub.subscribe((t("ret", "+"), 2)), [2], "SUBACK")
    got = sub.received(3, "retained messages")
    eq(sorted((m.topic, m.payload, m.qos, bool(m.retain)) for m in got),
       [(t("ret", str(q)), b"r%d" % q, q, True) for q in range(3)], "retained messages")
    for m in got:
        eq(user_props(m), [("a", "2"), ("c", "3")], "user properties of " + m.topic)
    sub.clear()
    eq(sub.subscribe((t("live"), 2)), [2], "SUBACK")
    pub.publish(t("ret", "1"), "", qos=1, retain=True)
    got = sub.received(1, "the clearing message")
    eq([(m.topic, m.payload, bool(m.retain)) for m in got], [(t("ret", "1"), b"", False)],
       "empty retained message to a live subscriber")
    sub.barrier(pub, t("live"))
    late = Peer(t("late"))
    late.subscribe((t("ret", "+"), 2), (t("live"), 2))
    eq(sorted(m.topic for m in late.barrier(pub, t("live"))), [t("ret", "0"), t("ret", "2")],
       "retained messages after clearing one")
    for q in (0, 2):
        pub.publish(t("ret", str(q)), "", retain=True)


def v5_retain_as_published():
    """Retain As Published: RETAIN kept on live delivery only when set
    [MQTT-3.3.1-12] [MQTT-3.3.1-13]."""
    pub = Peer(t("pub"))
    rap = Peer(t("rap"))
    rap.subscribe((t("rap"), SubscribeOptions(qos=2, retainAsPublished=True)))
    plain = Peer(t("plain"))
    plain.subscribe((t("rap"), 2))
    pub.publish(t("rap"), "not retained", qos=1)
    pub.publish(t("rap"), "retained", qos=1, retain=True)
    eq([(m.payload, bool(m.retain)) for m in rap.received(2)], [(b"not retained", False), (b"retained", True)], "RAP 1")
    eq([(m.payload, bool(m.retain)) for m in plain.received(2)], [(b"not retained", False), (b"retained", False)], "RAP 0")
    pub.publish(t("rap"), "", retain=True)


def v5_retain_handling():
    """Retain Handling 0 sends retained messages at every subscribe, 1 only
    when the subscription is new, 2 never [MQTT-3.3.1-9] [MQTT-3.3.1-10]
    [MQTT-3.3.1-11]."""
    pub = Peer(t("pub"))
    pub.publish(t("rh", "x"), "kept", qos=1, retain=True)
    sub = Peer(t("sub"))
    sub.subscribe((t("rhbar"), 2))
    for rh, first, again in ((0, 1, 1), (1, 1, 0), (2, 0, 0)):
        f = t("rh", "+") if rh != 1 else t("rh", "#")
        if rh == 2:
            f = t("rh", "x")
        for n, want in ((1, first), (2, again)):
            sub.subscribe((f, SubscribeOptions(qos=1, retainHandling=rh)))
            got = sub.barrier(pub, t("rhbar"))
            eq(len(got), want, "retained messages for retain handling %d, subscription %d" % (rh, n))
            if want:
                eq(bool(got[0].retain), True, "RETAIN on a retained message")
    pub.publish(t("rh", "x"), "", retain=True)


def v5_offline_queue():
    """A session with an expiry interval keeps its subscriptions and queues
    QoS 1 and 2 messages while offline [MQTT-3.1.2-23] [MQTT-4.5.0-1];
    CONNACK says the session is present [MQTT-3.2.2-2]."""
    sub = Peer(t("oq"), expiry=300)
    sub.subscribe((t("oq", "#"), 2))
    sub.disconnect()
    pub = Peer(t("pub"))
    for q in (1, 2, 1, 2):
        pub.publish(t("oq", "m"), "q%d" % q, qos=q)
    pub.publish(t("oq", "m"), "q0", qos=0)
    present, rc, _ = sub.connect(clean=False, expiry=300)
    eq((present, rc), (True, 0), "CONNACK session present")
    got = sub.barrier(pub, t("oq", "m"))
    # QoS 0 messages to an offline session are not queued (a server may).
    # Paho hands QoS 2 messages over at PUBREL, so order is checked per QoS.
    eq([m.qos for m in got if m.payload != b"q0"], [1, 1, 2, 2], "queued messages")
    sub.disconnect(SessionExpiryInterval=0)
    present, _, _ = sub.connect(clean=False)
    eq(present, False, "session present after DISCONNECT set the expiry to 0")
    sub.disconnect()


def v5_session_expiry():
    """Session Expiry Interval: 0 ends the session with the connection
    [MQTT-3.1.2-23]; 0xFFFFFFFF never expires; DISCONNECT may change it, but
    raising it from 0 is a Protocol Error [MQTT-3.14.2-2]."""
    c = Peer(t("se"), expiry=0)
    c.subscribe((t("se"), 1))
    c.disconnect()
    eq(c.connect(clean=False, expiry=0xFFFFFFFF)[0], False, "session present after expiry 0")
    _, _, p = c.connacks[-1]
    eq(hasattr(p, "SessionExpiryInterval"), False, "CONNACK echoes no session expiry the server accepted")
    c.subscribe((t("se"), 1))
    c.disconnect()
    eq(c.connect(clean=False, expiry=0)[0], True, "session present after expiry 0xFFFFFFFF")
    # The server answers with DISCONNECT 0x82, which Paho, having closed
    # its side after its own DISCONNECT, does not read (the raw test
    # TestRawSessionExpiryOnDisconnect checks the reason): the session ends.
    c.disconnect(SessionExpiryInterval=60)
    eq(c.connect(clean=False, expiry=0)[0], False, "session present after the refused DISCONNECT")
    c.disconnect()


def v5_will():
    """The will is published when the connection ends without DISCONNECT
    [MQTT-3.1.2-8] or with reason 0x04 [MQTT-3.14.2-?], not after a normal
    DISCONNECT [MQTT-3.1.2-10]; its properties travel with it."""
    watcher = Peer(t("watch"))
    watcher.subscribe((t("will", "#"), 2))
    pub = Peer(t("pub"))
    will = {"topic": t("will", "a"), "payload": "gone", "qos": 1,
            "properties": props(PacketTypes.WILLMESSAGE, UserProperty=[("k", "1"), ("j", "2")], ContentType="text/plain")}
    for how, want in (("drop", 1), ("disconnect", 0), ("disconnect with will", 1)):
        c = Peer(t("willer"), will=will)
        if how == "drop":
            c.drop()
        elif how == "disconnect":
            c.disconnect()
        else:
            c.disconnect(reason=0x04)
        got = watcher.barrier(pub, t("will", "bar"))
        eq(len(got), want, "wills after " + how)
        if want:
            m = got[0]
            eq((m.topic, m.payload, m.qos), (t("will", "a"), b"gone", 1), "will")
            eq(user_props(m), [("k", "1"), ("j", "2")], "will user properties")
            eq(m.properties.ContentType, "text/plain", "will content type")
        c.client.will_clear()


def v5_will_delay():
    """Will Delay Interval: the will waits for the delay or the session's
    end, whichever is first [MQTT-3.1.3-9]; a session resumed in time
    cancels it [MQTT-3.1.3-10]."""
    watcher = Peer(t("watch"))
    watcher.subscribe((t("wd", "#"), 2))
    pub = Peer(t("pub"))
    will = {"topic": t("wd", "w"), "payload": "late", "qos": 1,
            "properties": props(PacketTypes.WILLMESSAGE, WillDelayInterval=3600)}
    # Session expiry 0: the session ends with the connection, so does the delay.
    c = Peer(t("wd1"), will=will, expiry=0)
    c.drop()
    eq([m.payload for m in watcher.received(1, "will")], [b"late"], "will when the session ends before the delay")
    watcher.clear()
    # Session kept: the delay runs, and resuming cancels the will.
    c = Peer(t("wd2"), will=will, expiry=3600)
    c.drop()
    c.client.will_clear()
    eq(c.connect(clean=False, expiry=0)[0], True, "session present")
    eq(watcher.barrier(pub, t("wd", "bar")), [], "wills after resuming within the delay")
    c.disconnect()


def v5_zero_length_client_id():
    """A zero-length client identifier gets an Assigned Client Identifier
    [MQTT-3.1.3-6] [MQTT-3.2.2-16], with Clean Start 0 as well."""
    for clean in (True, False):
        c = Peer("", clean=clean)
        present, rc, p = c.connacks[-1]
        eq((present, rc), (False, 0), "CONNACK")
        assigned = getattr(p, "AssignedClientIdentifier", "")
        assert assigned, "no Assigned Client Identifier in %s" % p
        c.disconnect()


def v5_overlapping():
    """Overlapping subscriptions: one delivery carrying the highest QoS and
    every matching Subscription Identifier [MQTT-3.3.4-3] [MQTT-3.3.4-5]."""
    c = Peer(t("ov"))
    c.subscribe((t("ov", "#"), 2), sub_id=1)
    c.subscribe((t("ov", "+"), 1), sub_id=2)
    c.subscribe((t("ov", "x"), 0))
    c.publish(t("ov", "x"), "one", qos=2)
    got = c.received(1)
    eq(len(got), 1, "deliveries")
    eq(got[0].qos, 2, "QoS")
    eq(sorted(got[0].properties.SubscriptionIdentifier), [1, 2], "subscription identifiers")
    c.disconnect()


def v5_subscription_identifier():
    """A subscription's identifier goes with every message it matches
    [MQTT-3.3.4-3]; resubscribing without one removes it [MQTT-3.8.4-3]."""
    c = Peer(t("sid"))
    c.subscribe((t("sid"), 2), sub_id=268435455)
    c.publish(t("sid"), "a", qos=1)
    eq(c.received(1)[0].properties.SubscriptionIdentifier, [268435455], "identifier")
    c.clear()
    c.subscribe((t("sid"), 2))
    c.publish(t("sid"), "b", qos=1)
    m = c.received(1)[0]
    eq(hasattr(m.properties, "SubscriptionIdentifier"), False, "identifier after resubscribing without one")
    c.disconnect()


def v5_dollar_topics():
    """Filters starting with a wildcard do not match topics beginning with
    $ [MQTT-4.7.2-1]; a client may not publish to them here (0x90)."""
    c = Peer(t("dollar"))
    c.subscribe(("#", SubscribeOptions(qos=2, retainHandling=0)), ("+/+/#", 2), (t("dbar"), 2))
    got = c.barrier(c, t("dbar"))
    eq([m.topic for m in got if m.topic.startswith("$")], [], "$ topics matched by # and +")
    c.unsubscribe("#", "+/+/#")
    # Other scenarios publish concurrently: what "#" matched before the
    # UNSUBACK may still be queued, so wait for a $SYS message itself.
    c.clear()
    c.subscribe(("$SYS/#", 0))
    c.wait("$SYS message", lambda: any(m.topic.startswith("$SYS/") for m in c.messages))
    c.disconnect()


def v5_unsubscribe():
    """UNSUBACK: 0x00 for a removed subscription, 0x11 when none existed
    [MQTT-3.11.3-1]; messages stop after UNSUBACK [MQTT-3.10.4-2]."""
    c = Peer(t("un"))
    c.subscribe((t("un", "a"), 2), (t("un", "b"), 2))
    eq(c.unsubscribe(t("un", "a"), t("un", "nothing")), [0x00, 0x11], "UNSUBACK reason codes")
    c.publish(t("un", "a"), "x", qos=1)
    eq(c.barrier(c, t("un", "b")), [], "messages after unsubscribing")
    c.disconnect()


def v5_user_properties():
    """User properties reach subscribers unaltered and in order, duplicates
    included [MQTT-3.3.2-17] [MQTT-3.3.2-18]."""
    c = Peer(t("up"))
    c.subscribe((t("up"), 2))
    up = [("a", "2"), ("c", "3"), ("a", "1"), ("", "empty key")]
    for q in range(3):
        c.publish(t("up"), "q%d" % q, qos=q, UserProperty=up)
    for m in c.received(3):
        eq(user_props(m), up, "user properties at QoS %d" % m.qos)
    c.disconnect()


def v5_payload_format():
    """Payload Format Indicator and Content Type are forwarded unaltered
    [MQTT-3.3.2-4] [MQTT-3.3.2-20]. Edgeport does not check the payload of
    a message marked UTF-8 (the check is optional, 0x99 when done)."""
    c = Peer(t("pf"))
    c.subscribe((t("pf"), 2))
    c.publish(t("pf"), "texte", qos=1, PayloadFormatIndicator=1, ContentType="text/plain; charset=utf-8")
    c.publish(t("pf"), b"\x00\x01\xff", qos=1, PayloadFormatIndicator=0)
    got = c.received(2)
    eq((got[0].properties.PayloadFormatIndicator, got[0].properties.ContentType), (1, "text/plain; charset=utf-8"), "PFI 1")
    eq((got[1].payload, got[1].properties.PayloadFormatIndicator), (b"\x00\x01\xff", 0), "PFI 0")
    c.disconnect()


def v5_message_expiry():
    """Message Expiry Interval: forwarded minus the time the message waited
    [MQTT-3.3.2-6]; absent when the publisher set none."""
    sub = Peer(t("mx"), expiry=300)
    sub.subscribe((t("mx"), 2))
    sub.disconnect()
    pub = Peer(t("pub"))
    pub.publish(t("mx"), "expiring", qos=1, MessageExpiryInterval=100)
    pub.publish(t("mx"), "forever", qos=1)
    sub.connect(clean=False, expiry=0)
    got = sub.received(2)
    left = got[0].properties.MessageExpiryInterval
    assert 0 < left <= 100, "remaining expiry %d" % left
    eq(hasattr(got[1].properties, "MessageExpiryInterval"), False, "expiry on a message without one")
    sub.disconnect()


def v5_request_response():
    """Request Response Information 1 gets Response Information in CONNACK
    [MQTT-3.1.2-28]; Response Topic and Correlation Data travel unaltered
    [MQTT-3.3.2-15] [MQTT-3.3.2-16]."""
    req = Peer(t("req"), RequestResponseInformation=1)
    info = getattr(req.connacks[-1][2], "ResponseInformation", "")
    assert info, "no Response Information in CONNACK"
    plain = Peer(t("plain"))
    eq(hasattr(plain.connacks[-1][2], "ResponseInformation"), False, "Response Information not asked for")
    resp = Peer(t("resp"))
    resp.subscribe((t("rr", "svc"), 1))
    req.subscribe((info + "/reply", 1))
    req.publish(t("rr", "svc"), "ping", qos=1, ResponseTopic=info + "/reply", CorrelationData=b"\x01\x02corr")
    m = resp.received(1)[0]
    eq((m.properties.ResponseTopic, m.properties.CorrelationData), (info + "/reply", b"\x01\x02corr"), "request properties")
    resp.publish(m.properties.ResponseTopic, "pong", qos=1, CorrelationData=m.properties.CorrelationData)
    r = req.received(1)[0]
    eq((r.payload, r.properties.CorrelationData), (b"pong", b"\x01\x02corr"), "response")
    for p in (req, plain, resp):
        p.disconnect()


def v5_server_topic_alias():
    """Server topic aliases only up to the client's Topic Alias Maximum
    [MQTT-3.1.2-26] [MQTT-3.3.2-9]; none when it sent 0 or nothing
    [MQTT-3.1.2-27]."""
    c = Peer(t("sta"), TopicAliasMaximum=1)
    c.subscribe((t("sta", "#"), 2))
    for q in range(3):
        c.publish(t("sta", "a"), "a%d" % q, qos=q)
    got = c.received(3)
    aliases = [getattr(m.properties, "TopicAlias", None) for m in got]
    eq(aliases, [1, 1, 1], "aliases")
    eq([m.topic for m in got], [t("sta", "a"), "", ""], "topics with aliases")
    c.clear()
    c.publish(t("sta", "b"), "b", qos=1)
    m = c.received(1)[0]
    eq((m.topic, getattr(m.properties, "TopicAlias", None)), (t("sta", "b"), None), "a second topic beyond the maximum")
    c.disconnect()
    n = Peer(t("sta0"))
    n.subscribe((t("sta0"), 2))
    for q in range(3):
        n.publish(t("sta0"), "x", qos=q)
    for m in n.received(3):
        eq((m.topic, hasattr(m.properties, "TopicAlias")), (t("sta0"), False), "no aliases without a maximum")
    n.disconnect()


def v5_client_topic_alias():
    """Client topic aliases up to the server's maximum [MQTT-3.2.2-17];
    aliases do not survive the connection [MQTT-3.3.2-7], and an unknown
    one ends it with a Protocol Error; one above the maximum gives 0x94
    [MQTT-3.3.2-8] [MQTT-3.3.2-9]."""
    c = Peer(t("cta"), expiry=300)
    tam = getattr(c.connacks[-1][2], "TopicAliasMaximum", 0)
    assert tam > 0, "no Topic Alias Maximum in CONNACK"
    c.subscribe((t("cta"), 2))
    c.publish(t("cta"), "set", qos=1, TopicAlias=1)
    c.publish("", "used", qos=1, TopicAlias=1)
    eq([(m.topic, m.payload) for m in c.received(2)], [(t("cta"), b"set"), (t("cta"), b"used")], "aliased messages")
    c.disconnect()
    c.connect(clean=False, expiry=300)
    c.client.publish("", "stale", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=1))
    c.wait("DISCONNECT 0x82", lambda: 0x82 in c.disconnects[1:])
    c.client.loop_stop()
    # A new client: Paho would resend its unacknowledged PUBLISH.
    d = Peer(t("cta2"))
    d.client.publish(t("cta"), "over", qos=1, properties=props(PacketTypes.PUBLISH, TopicAlias=tam + 1))
    d.wait("DISCONNECT 0x94", lambda: 0x94 in d.disconnects)
    d.client.loop_stop()


def v5_maximum_packet_size():
    """The server never sends a packet above the client's Maximum Packet
    Size: such a message is dropped for that client [MQTT-3.1.2-24]
    [MQTT-3.1.2-25]; others still get it. The server's own maximum is in
    CONNACK and a larger packet ends the connection with 0x95."""
    small = Peer(t("mps"), MaximumPacketSize=64)
    big = Peer(t("mpsbig"))
    server_max = big.connacks[-1][2].MaximumPacketSize
    for c in (small, big):
        c.subscribe((t("mps"), 2))
    small.publish(t("mps"), "." * 16, qos=1)
    small.publish(t("mps"), "." * 64, qos=1)
    small.publish(t("mps"), "." * 8, qos=2)
    eq([len(m.payload) for m in small.received(2)], [16, 8], "payloads to the client with a 64-byte maximum")
    eq([len(m.payload) for m in big.received(3)], [16, 64, 8], "payloads to the other client")
    big.client.publish(t("mps"), b"." * server_max, qos=0)
    big.wait("DISCONNECT 0x95", lambda: 0x95 in big.disconnects)
    big.client.loop_stop()
    small.disconnect()


def v5_shared_subscription():
    """Shared subscriptions: each message to one member of the group
    [MQTT-4.8.2-?], wildcards allowed, no retained messages on subscribing
    [MQTT-3.8.4-?]; ordinary subscribers still get every one."""
    pub = Peer(t("pub"))
    pub.publish(t("sh", "kept"), "kept", qos=1, retain=True)
    a, b = Peer(t("sha")), Peer(t("shb"))
    for c in (a, b):
        c.subscribe(("$share/grp/" + t("sh", "#"), 2))
    all_ = Peer(t("shall"))
    all_.subscribe((t("sh", "+"), 2))
    all_.received(1, "retained")
    all_.clear()
    n = 20
    for i in range(n):
        pub.publish(t("sh", "m"), str(i), qos=1)
    got = all_.received(n)
    eq([m.payload for m in got], [str(i).encode() for i in range(n)], "ordinary subscriber")

    deadline = time.monotonic() + TIMEOUT
    while len(a.messages) + len(b.messages) < n:
        assert time.monotonic() < deadline, "shared deliveries: %d of %d" % (len(a.messages) + len(b.messages), n)
        with a.cond:
            a.cond.wait(0.05)
    payloads = sorted(int(m.payload) for m in a.messages + b.messages)
    eq(payloads, list(range(n)), "shared deliveries (each exactly once)")
    assert a.messages and b.messages, "one member got every message: %d/%d" % (len(a.messages), len(b.messages))
    assert all(m.payload != b"kept" for m in a.messages + b.messages), "retained message sent to a shared subscription"
    pub.publish(t("sh", "kept"), "", retain=True)
    for c in (a, b, all_, pub):
        c.disconnect()


def v5_no_local():
    """No Local: a client does not get its own messages on that
    subscription [MQTT-3.8.3-3]; others do."""
    a, b = Peer(t("nla")), Peer(t("nlb"))
    a.subscribe((t("nl"), SubscribeOptions(qos=2, noLocal=True)), (t("nlbar"), 2))
    b.subscribe((t("nl"), SubscribeOptions(qos=2, noLocal=True)))
    a.publish(t("nl"), "from a", qos=1)
    eq([m.payload for m in b.received(1)], [b"from a"], "other subscriber")
    eq(a.barrier(a, t("nlbar")), [], "own messages with No Local")
    a.disconnect()
    b.disconnect()


def v5_connect_errors():
    """CONNECT refusals are CONNACKs with MQTT 5 reason codes: a bad
    authentication method 0x8C [MQTT-4.12.0-1]."""
    c = mqtt.Client(client_id=t("auth"), protocol=mqtt.MQTTv5)
    got = []
    done = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p=None: (got.append(code(rc)), done.set())
    c.connect(HOST, PORT, properties=props(PacketTypes.CONNECT, AuthenticationMethod="NO-SUCH-METHOD"))
    c.loop_start()
    assert done.wait(TIMEOUT), "no CONNACK"
    c.loop_stop()
    eq(got, [0x8C], "CONNACK reason for an unknown authentication method")


# ---------------------------------------------------------------- MQTT 3.1.1

def v311_retained():
    """RETAIN is 1 on retained messages sent at subscription and 0 on live
    deliveries [MQTT-3.3.1-8] [MQTT-3.3.1-9]; empty payload clears
    [MQTT-3.3.1-10] [MQTT-3.3.1-11]."""
    pub = Peer(t("pub3"), v5=False)
    pub.publish(t("r3", "a"), "kept", qos=1, retain=True)
    sub = Peer(t("sub3"), v5=False)
    sub.subscribe((t("r3", "+"), 2), (t("r3bar"), 2))
    eq([(m.payload, m.qos, bool(m.retain)) for m in sub.barrier(pub, t("r3bar"))], [(b"kept", 1, True)], "retained")
    pub.publish(t("r3", "a"), "live", qos=1, retain=True)
    eq([(m.payload, bool(m.retain)) for m in sub.barrier(pub, t("r3bar"))], [(b"live", False)], "live delivery")
    pub.publish(t("r3", "a"), "", qos=1, retain=True)
    sub.barrier(pub, t("r3bar"))
    late = Peer(t("late3"), v5=False)
    late.subscribe((t("r3", "+"), 2), (t("r3bar"), 2))
    eq(late.barrier(pub, t("r3bar")), [], "retained after clearing")


def v311_overlapping():
    """Overlapping subscriptions: one message, at the highest QoS
    [MQTT-3.3.5-1]."""
    c = Peer(t("ov3"), v5=False)
    c.subscribe((t("ov3", "#"), 2), (t("ov3", "+"), 1))
    c.publish(t("ov3", "x"), "one", qos=2)
    got = c.barrier(c, t("ov3", "bar"))
    eq([(m.payload, m.qos) for m in got], [(b"one", 2)], "deliveries")
    c.disconnect()


def v311_zero_length_client_id():
    """An empty client identifier is accepted with clean session
    [MQTT-3.1.3-7]. (Without it CONNACK 0x02 [MQTT-3.1.3-8]: Paho answers
    that by reconnecting under an identifier of its own, so TestRawMalformed
    checks it on the wire.)"""
    c = Peer("", v5=False)
    eq(c.connacks[-1][:2], (False, 0), "CONNACK with clean session")
    c.disconnect()


def v311_session():
    """Clean session 0 keeps subscriptions and QoS 1/2 messages
    [MQTT-3.1.2-4] [MQTT-3.1.2-5]; session present [MQTT-3.2.2-2]; clean
    session 1 discards it [MQTT-3.1.2-6]."""
    sub = Peer(t("s3"), v5=False, clean_session=False)
    eq(sub.connacks[-1][0], False, "session present on a new session")
    sub.subscribe((t("s3", "#"), 2))
    sub.disconnect()
    pub = Peer(t("pub3"), v5=False)
    pub.publish(t("s3", "m"), "q1", qos=1)
    pub.publish(t("s3", "m"), "q2", qos=2)
    eq(sub.connect()[0], True, "session present")
    eq([(m.payload, m.qos) for m in sub.barrier(pub, t("s3", "m"))], [(b"q1", 1), (b"q2", 2)], "queued")
    sub.disconnect()
    c = Peer(t("s3"), v5=False, clean_session=True)
    eq(c.connacks[-1][0], False, "session present with clean session")
    c.disconnect()


def v311_will():
    """The will goes out when the connection ends without DISCONNECT
    [MQTT-3.1.2-8], and not after DISCONNECT [MQTT-3.1.2-10]; with its
    retain flag [MQTT-3.1.2-17]."""
    w = Peer(t("w3watch"), v5=False)
    w.subscribe((t("w3", "#"), 2))
    pub = Peer(t("pub3"), v5=False)
    will = {"topic": t("w3", "a"), "payload": "gone", "qos": 2, "retain": True}
    c = Peer(t("w3"), v5=False, will=will)
    c.disconnect()
    eq(w.barrier(pub, t("w3", "bar")), [], "wills after DISCONNECT")
    c = Peer(t("w3"), v5=False, will=will)
    c.drop()
    got = w.received(1, "will")
    eq([(m.topic, m.payload, m.qos) for m in got], [(t("w3", "a"), b"gone", 2)], "will")
    late = Peer(t("w3late"), v5=False)
    late.subscribe((t("w3", "a"), 1), (t("w3", "bar"), 2))
    eq([(m.payload, bool(m.retain)) for m in late.barrier(pub, t("w3", "bar"))], [(b"gone", True)], "retained will")
    pub.publish(t("w3", "a"), "", retain=True)


def v311_dollar_topics():
    """# and + at the first level do not match $ topics [MQTT-4.7.2-1]."""
    c = Peer(t("d3"), v5=False)
    c.subscribe(("#", 2))
    got = c.barrier(c, t("d3bar"))
    eq([m.topic for m in got if m.topic.startswith("$")], [], "$ topics matched by #")
    c.disconnect()


SCENARIOS = {name: f for name, f in globals().items() if name.startswith(("v5_", "v311_")) and callable(f)}


def main():
    global HOST, PORT, PREFIX
    HOST, PORT, name, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    if name == "list":
        print("\n".join(sorted(SCENARIOS)))
        return
    SCENARIOS[name]()
    print("PASS " + name)


if __name__ == "__main__":
    main()
