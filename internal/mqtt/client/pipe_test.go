package client

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

func TestPipeBuffersWrites(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	// Both ends write without a reader: net.Pipe would deadlock here.
	if _, err := a.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := b.Read(buf)
	if err != nil || string(buf[:n]) != "hello world" {
		t.Fatalf("read %q, %v: want both writes in one read", buf[:n], err)
	}
	n, err = a.Read(buf)
	if err != nil || string(buf[:n]) != "back" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestPipeDeadlines(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	_ = a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := a.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read past the deadline: %v", err)
	}
	// Clearing the deadline makes reads wait again; data then arrives.
	_ = a.SetReadDeadline(time.Time{})
	go func() { _, _ = b.Write([]byte("x")) }()
	if n, err := a.Read(make([]byte, 1)); n != 1 || err != nil {
		t.Fatalf("read after clearing the deadline: %d, %v", n, err)
	}
	// A write blocked on a full buffer ends at its deadline.
	_ = b.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	big := make([]byte, pipeBuffer)
	if _, err := b.Write(big); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write(big); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a full pipe past the deadline: %v", err)
	}
	// A deadline in the past fails at once.
	_ = a.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read with a past deadline: %v", err)
	}
}

func TestPipeBackpressure(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	want := bytes.Repeat([]byte("0123456789"), pipeBuffer/5) // two buffers' worth
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(want); i += 4096 {
			if _, err := a.Write(want[i:min(i+4096, len(want))]); err != nil {
				t.Error(err)
				return
			}
		}
		_ = a.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got, err := io.ReadAll(b)
	wg.Wait()
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read %d bytes, %v; want %d", len(got), err, len(want))
	}
	// After CloseWrite the other direction still works.
	if _, err := b.Write([]byte("still")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8)
	if n, err := a.Read(buf); string(buf[:n]) != "still" || err != nil {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
}

func TestPipeClose(t *testing.T) {
	a, b := Pipe()
	if _, err := a.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	a.Close()
	// The peer reads what was written, then EOF; its writes fail.
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
	// The closed end fails with net.ErrClosed, and a blocked read ends.
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed end: %v", err)
	}
	c, d := Pipe()
	defer d.Close()
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	c.Close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("blocked read after Close: %v", err)
	}
}
