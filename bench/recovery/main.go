// Command recovery measures Edgeport's durable queue: it fills a persistent
// offline session with N QoS 1 messages through a real TCP connection, then
// reports the publish rate, bytes on disk per queued message and the time a
// restarted broker takes to restore them.
//
//	go run ./bench/recovery -n 1000000
package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/edgeport/edgeport/internal/bench"
	"github.com/edgeport/edgeport/internal/broker"
	"github.com/edgeport/edgeport/internal/mqtt/packet"
	"github.com/edgeport/edgeport/internal/store"
)

func main() {
	n := flag.Int("n", 1000000, "messages to queue")
	payload := flag.Int("payload", 64, "payload bytes")
	policy := flag.String("sync", "batch", "sync policy: always, batch, none")
	dir := flag.String("dir", "", "data directory (default: a new temporary one, removed afterwards)")
	flag.Parse()
	if err := run(*n, *payload, store.SyncPolicy(*policy), *dir); err != nil {
		fmt.Fprintln(os.Stderr, "recovery:", err)
		os.Exit(1)
	}
}

func run(n, payload int, policy store.SyncPolicy, dir string) error {
	if dir == "" {
		d, err := os.MkdirTemp("", "edgeport-recovery-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	opts := broker.Options{SysInterval: -1, MaxQueuedMessages: n + 1}
	b, st, addr, stop, err := start(dir, opts, policy)
	if err != nil {
		return err
	}
	ctx := context.Background()
	sub, err := bench.Dial(ctx, addr, bench.ClientOptions{ClientID: "queue-owner", Persistent: true})
	if err != nil {
		return err
	}
	if err := sub.Subscribe(ctx, packet.Subscription{Filter: "recovery/#", QoS: 1}); err != nil {
		return err
	}
	sub.Close()
	pub, err := bench.Dial(ctx, addr, bench.ClientOptions{ClientID: "filler", Window: 1000})
	if err != nil {
		return err
	}
	// Random payloads: the store compresses, and zeros would flatter it.
	rng := rand.NewChaCha8([32]byte{1})
	body := make([]byte, payload)
	t0 := time.Now()
	for i := 0; i < n; i++ {
		_, _ = rng.Read(body)
		if err := pub.Publish(ctx, &packet.Publish{QoS: 1, Topic: "recovery/t", Payload: body}); err != nil {
			return err
		}
	}
	for pub.Acked() < int64(n) {
		time.Sleep(time.Millisecond)
	}
	fill := time.Since(t0)
	pub.Close()
	_ = b
	stop()
	_ = st
	size := dirSize(filepath.Join(dir, "store"))

	t1 := time.Now()
	st2, err := store.Open(filepath.Join(dir, "store"), store.Options{Sync: policy})
	if err != nil {
		return err
	}
	b2, err := broker.New(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	b2.AttachStore(st2)
	if err := b2.Start(context.Background()); err != nil {
		return err
	}
	restore := time.Since(t1)
	_ = b2.Stop(context.Background())
	_ = st2.Close()
	fmt.Printf("queued      %d QoS 1 messages of %d B into one persistent offline session (sync policy %s)\n", n, payload, policy)
	fmt.Printf("publish     %.0f msg/s acknowledged (durable before PUBACK)\n", float64(n)/fill.Seconds())
	fmt.Printf("disk        %.1f MiB, %.0f bytes per queued message\n", float64(size)/(1<<20), float64(size)/float64(n))
	fmt.Printf("recovery    %.2f s to open the store and restore every message\n", restore.Seconds())
	return nil
}

func start(dir string, opts broker.Options, policy store.SyncPolicy) (*broker.Broker, *store.Store, string, func(), error) {
	st, err := store.Open(filepath.Join(dir, "store"), store.Options{Sync: policy})
	if err != nil {
		return nil, nil, "", nil, err
	}
	b, err := broker.New(opts, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, nil, "", nil, err
	}
	b.AttachStore(st)
	if err := b.Start(context.Background()); err != nil {
		return nil, nil, "", nil, err
	}
	b.ReleaseWills()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, "", nil, err
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.ServeConn(c, "bench")
		}
	}()
	stop := func() {
		ln.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = b.Stop(ctx)
		_ = st.Close()
	}
	return b, st, ln.Addr().String(), stop, nil
}

func dirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}
