// Package ociimage builds Edgeport's container image without a container
// engine: a reproducible, multi-platform OCI image of static binaries.
package ociimage

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Where things live in the image.
const (
	BinaryPath = "/usr/local/bin/edgeport"
	DataDir    = "/var/lib/edgeport"
	// UID and GID of the user the image runs as (the "nonroot" user of
	// distroless images, which Kubernetes policies commonly expect).
	UID = 65532
	GID = 65532
)

// Platform is one binary of the image: a static executable for os/arch.
type Platform struct {
	OS, Arch, Variant string
	Binary            string // path of the static executable on this machine
}

// Options describe the image. Equal options and equal files give a
// byte-identical image, hence the same digest.
type Options struct {
	Platforms []Platform
	// Created is the time stamped on every file and on the image
	// (SOURCE_DATE_EPOCH); never the time of the build.
	Created time.Time
	// Labels are the image's config labels (org.opencontainers.image.*).
	Labels map[string]string
	// CABundle is a PEM bundle installed as /etc/ssl/certs/ca-certificates.crt
	// for TLS to public endpoints; empty installs none.
	CABundle string
	// Cmd is the default arguments of the entrypoint.
	Cmd []string
	// ExposedPorts are documentation of the ports (e.g. "1883/tcp").
	ExposedPorts []string
}

// Build returns the multi-platform image index of opts.Platforms.
func Build(opts Options) (v1.ImageIndex, error) {
	if len(opts.Platforms) == 0 {
		return nil, errors.New("ociimage: no platform")
	}
	if opts.Created.IsZero() {
		return nil, errors.New("ociimage: Created is required (SOURCE_DATE_EPOCH), a build time would make every image differ")
	}
	var ca []byte
	if opts.CABundle != "" {
		var err error
		if ca, err = os.ReadFile(opts.CABundle); err != nil {
			return nil, fmt.Errorf("ociimage: reading the CA bundle: %w", err)
		}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	seen := map[string]bool{}
	for _, p := range opts.Platforms {
		key := p.OS + "/" + p.Arch + "/" + p.Variant
		if seen[key] {
			return nil, fmt.Errorf("ociimage: platform %s given twice", strings.TrimSuffix(key, "/"))
		}
		seen[key] = true
		img, err := buildImage(opts, p, ca)
		if err != nil {
			return nil, fmt.Errorf("ociimage: %s/%s: %w", p.OS, p.Arch, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add: img,
			Descriptor: v1.Descriptor{
				MediaType: types.OCIManifestSchema1,
				Platform:  &v1.Platform{OS: p.OS, Architecture: p.Arch, Variant: p.Variant},
			},
		})
	}
	return idx, nil
}

// buildImage is one platform's image: a single layer holding the binary,
// the files a non-root static program expects, and the data directory.
func buildImage(opts Options, p Platform, ca []byte) (v1.Image, error) {
	bin, err := os.ReadFile(p.Binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootFS(opts.Created, bin, ca)
	if err != nil {
		return nil, err
	}
	layer, err := gzipLayer(layerTar)
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(mutate.MediaType(empty.Image, types.OCIManifestSchema1), mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: opts.Created},
			CreatedBy: "ociimage: " + BinaryPath + " (static, non-root)",
		},
	})
	if err != nil {
		return nil, err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: opts.Created}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Arch, p.Variant
	cf.Config = v1.Config{
		User:       strconv.Itoa(UID) + ":" + strconv.Itoa(GID),
		Entrypoint: []string{BinaryPath},
		Cmd:        opts.Cmd,
		WorkingDir: DataDir,
		Env:        []string{"PATH=/usr/local/bin", "SSL_CERT_DIR=/etc/ssl/certs"},
		Labels:     opts.Labels,
		Volumes:    map[string]struct{}{DataDir: {}},
	}
	if len(opts.ExposedPorts) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, port := range opts.ExposedPorts {
			cf.Config.ExposedPorts[port] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

type entry struct {
	name     string // without the leading slash
	mode     int64
	uid, gid int
	data     []byte // nil for a directory
	dir      bool
}

// rootFS writes the layer's tar: sorted names, fixed owners and times, no
// user or group names and no host metadata, so that equal inputs give
// equal bytes.
func rootFS(created time.Time, bin, ca []byte) ([]byte, error) {
	created = created.UTC().Truncate(time.Second)
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:%s:/sbin/nologin\n", UID, GID, DataDir)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)
	entries := []entry{
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o755, data: bin},
		// Writable by the user, for `docker run` without volumes; in
		// Kubernetes both are volumes.
		{name: strings.TrimPrefix(DataDir, "/"), mode: 0o700, uid: UID, gid: GID, dir: true},
		{name: "tmp", mode: 0o1777, dir: true},
	}
	if ca != nil {
		entries = append(entries, entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca})
	}
	// Parent directories, root-owned.
	have := map[string]bool{}
	for _, e := range entries {
		have[e.name] = true
	}
	for _, e := range slices.Clone(entries) {
		for d := path.Dir(e.name); d != "."; d = path.Dir(d) {
			if !have[d] {
				have[d] = true
				entries = append(entries, entry{name: d, mode: 0o755, dir: true})
			}
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.name, b.name) })

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.gid,
			ModTime: created,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag, h.Name = tar.TypeDir, e.name+"/"
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
