package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/testwait"
)

// mountTmpfs mounts a tmpfs of the given size for the test: a disk that
// really fills. It needs root, which CI has (scripts/test.sh runs as root).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (CI runs scripts/test.sh as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mounting a tmpfs on %s: %v\n%s", dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("unmounting %s: %v\n%s", dir, err, out)
		}
	})
	return dir
}

// fillDisk grows the file at path until its file system has at most leave
// bytes free, as another program filling the disk would.
func fillDisk(t *testing.T, path string, leave int64) {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
		t.Fatal(err)
	}
	grow := int64(st.Bavail)*int64(st.Bsize) - leave
	if grow <= 0 {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if err := syscall.Fallocate(int(f.Fd()), 0, fi.Size(), grow); err != nil {
		t.Fatalf("filling the disk: %v", err)
	}
}

// TestDiskFull: the built binary survives a full disk (issue 10, item 4).
// QoS 1 publishes get 0x97 before the disk is full and while it is, QoS 0
// ones still reach subscribers online (a retained one is dropped), the
// broker stays up and takes data again once space is freed, the log does
// not flood, and a start on a full disk either comes up refusing data or
// exits at once with one clear error. Before the fix Pebble panicked and
// the restart never finished, ignoring SIGTERM and logging hundreds of
// megabytes.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	mnt := mountTmpfs(t, "64m")
	data, filler := filepath.Join(mnt, "data"), filepath.Join(mnt, "filler")
	args := []string{"--storage-reserve", fmt.Sprint(8 << 20)}
	e := startEdgeportAt(t, data, args...)
	m := newMosquitto(t, e)
	addr := e.addr(t, "mqtt")

	// A persistent subscriber offline: QoS 1 messages for it are written.
	keeper := &packet.Connect{ClientID: "keeper", CleanStart: true}
	keeper.Properties.SessionExpiry = 3600
	keeper.Properties.Set(packet.PropSessionExpiry)
	k, _ := dialMQTT(t, addr, keeper)
	k.subscribe(1, "full/#", 1)
	k.disconnect()
	live := m.subscribe("-V", "5", "-t", "full/live/#")
	pub, _ := dialMQTT(t, addr, &packet.Connect{ClientID: "publisher", CleanStart: true})
	payload := make([]byte, 64<<10)
	publishUntil := func(what string, want packet.ReasonCode) {
		t.Helper()
		// Polled: the store re-measures the disk every few milliseconds.
		id := uint16(0)
		var code packet.ReasonCode
		if !testwait.Within(20*time.Second, func() bool {
			id++
			if err := pub.write(&packet.Publish{QoS: 1, PacketID: id, Topic: "full/q1", Payload: payload}); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			var err error
			if code, err = pub.await(id); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return code == want
		}) {
			t.Fatalf("%s: still %v after 20 s, want %v", what, code, want)
		}
	}
	publishUntil("with room", packet.Success)

	// Another program leaves less than the reserve free, then fills the
	// disk entirely.
	fillDisk(t, filler, 2<<20)
	publishUntil("nearly full", packet.QuotaExceeded)
	fillDisk(t, filler, 0)
	publishUntil("full", packet.QuotaExceeded)
	// QoS 0 needs no disk and still reaches the subscriber online; a
	// retained QoS 0 message would be written and is dropped.
	m.publish("-V", "5", "-t", "full/live/retained", "-r", "-m", "not kept")
	m.publish("-V", "5", "-t", "full/live/plain", "-m", "delivered")
	live.waitLine(t, lineWait, "the QoS 0 message", func(l string) bool { return strings.HasSuffix(l, "|delivered") })
	late := m.subscribe("-V", "5", "-t", "full/live/#")
	m.publish("-V", "5", "-t", "full/live/marker", "-m", "marker")
	if first := late.waitLine(t, lineWait, "a message", func(l string) bool { return strings.HasPrefix(l, msgPrefix) }); !strings.HasSuffix(first, "|marker") {
		t.Fatalf("a new subscriber's first message %q: the retained QoS 0 message was kept on a full disk", first)
	}

	// Space is freed: the broker takes data again by itself.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	publishUntil("after space was freed", packet.Success)
	if logs := e.logs.String(); len(logs) > 64<<10 || strings.Count(logs, "no space") > 5 {
		t.Fatalf("the log grew to %d bytes, %d lines about space:\n%s", len(logs), strings.Count(logs, "no space"), tail(logs, 8<<10))
	}

	// A restart on a full disk: the reserve file is released and the
	// broker comes up refusing data, or it exits at once with one error.
	fillDisk(t, filler, 0)
	if err := e.stop(); err != nil {
		t.Fatalf("stopping on a full disk: %v", err)
	}
	restart := func() (*proc, bool) {
		t.Helper()
		p := startProc(t, time.Minute, "", edgeportBin, append([]string{"serve", "--mqtt-addr", "127.0.0.1:0", "--ws-addr", "off",
			"--http-addr", "off", "--selftest-interval", "0", "--data-dir", data}, args...)...)
		line, err := p.stderr.waitFor(15*time.Second, func(l string) bool { return strings.Contains(l, `msg="edgeport started"`) })
		if err == nil {
			return p, true
		}
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			t.Fatalf("edgeport neither started nor exited within 15 s on a full disk (last: %q)\n%s", line, tail(p.stderr.String(), 8<<10))
		}
		return p, false
	}
	p, started := restart()
	if started {
		// Up, refusing data until space is freed, and stopping on SIGTERM.
		pub, _ := dialMQTT(t, addrOf(t, p), &packet.Connect{ClientID: "publisher", CleanStart: true})
		if err := pub.write(&packet.Publish{QoS: 1, PacketID: 1, Topic: "full/q1", Payload: payload}); err != nil {
			t.Fatal(err)
		}
		if code, err := pub.await(1); err != nil || code != packet.QuotaExceeded {
			t.Fatalf("QoS 1 after a start on a full disk: %v %v, want 0x97", code, err)
		}
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case <-p.done:
		case <-time.After(stopTimeout):
			t.Fatal("edgeport started on a full disk did not stop on SIGTERM")
		}
	} else {
		checkOneError(t, p)
	}
	// Without the reserve file (deleted by hand, say) there is no room to
	// open the store: one clear error, at once.
	_ = os.Remove(filepath.Join(data, "store", "EDGEPORT-RESERVE"))
	fillDisk(t, filler, 0)
	p, started = restart()
	if started {
		t.Fatal("edgeport started on a disk with no room at all")
	}
	checkOneError(t, p)
}

// checkOneError requires a start that failed with one clear error about
// the disk, and little output.
func checkOneError(t *testing.T, p *proc) {
	t.Helper()
	out := p.stderr.String()
	if p.err == nil || !strings.Contains(out, "no space left") || len(out) > 8<<10 {
		t.Fatalf("start on a full disk: exit %v, %d bytes of output:\n%s", p.err, len(out), tail(out, 8<<10))
	}
	t.Logf("start on a full disk: %v\n%s", p.err, out)
}

// addrOf is the MQTT address a started edgeport process logged.
func addrOf(t *testing.T, p *proc) string {
	t.Helper()
	all, _, _ := p.stderr.snapshot()
	for _, l := range all {
		if m := listeningRE.FindStringSubmatch(l); m != nil && m[1] == "mqtt" {
			return m[2]
		}
	}
	t.Fatalf("no mqtt listener logged:\n%s", p.stderr)
	return ""
}
