// Command ociimage builds Edgeport's OCI image from static binaries without
// a container engine (scripts/build-image.sh runs it); a build tool, not shipped.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/edgeport/edgeport/internal/ociimage"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("ociimage", flag.ContinueOnError)
	var platforms, labels listFlag
	fs.Var(&platforms, "platform", "os/arch=path of a static binary (repeatable)")
	fs.Var(&labels, "label", "key=value image label (repeatable)")
	tag := fs.String("tag", "", "image reference, e.g. ghcr.io/edgeport/edgeport:v0.1.0")
	out := fs.String("out", "", "output directory: oci/ (layout), image-oci.tar, image-<os>-<arch>.docker.tar")
	epoch := fs.String("source-date-epoch", os.Getenv("SOURCE_DATE_EPOCH"), "Unix time stamped on files and image (default $SOURCE_DATE_EPOCH)")
	ca := fs.String("ca-bundle", "", "PEM CA bundle to install as /etc/ssl/certs/ca-certificates.crt")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tag == "" || *out == "" || len(platforms) == 0 {
		return errors.New("--tag, --out and at least one --platform are required")
	}
	secs, err := strconv.ParseInt(*epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("--source-date-epoch: %q is not a Unix time", *epoch)
	}
	opts := ociimage.Options{
		Created:      time.Unix(secs, 0).UTC(),
		CABundle:     *ca,
		Cmd:          []string{"serve", "--data-dir=" + ociimage.DataDir},
		ExposedPorts: []string{"1883/tcp", "8883/tcp", "8083/tcp", "8080/tcp"},
		Labels:       map[string]string{},
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return fmt.Errorf("--label: %q is not key=value", l)
		}
		opts.Labels[k] = v
	}
	for _, p := range platforms {
		plat, bin, ok := strings.Cut(p, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 {
			return fmt.Errorf("--platform: %q is not os/arch=path", p)
		}
		opts.Platforms = append(opts.Platforms, ociimage.Platform{OS: osName, Arch: arch, Binary: bin})
	}
	idx, err := ociimage.Build(opts)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(*out); err != nil {
		return err
	}
	layoutDir := filepath.Join(*out, "oci")
	if err := ociimage.WriteLayout(layoutDir, idx, *tag); err != nil {
		return err
	}
	if err := ociimage.WriteOCIArchive(layoutDir, filepath.Join(*out, "image-oci.tar"), opts.Created); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *tag, d)
	for _, p := range opts.Platforms {
		img, err := ociimage.Select(idx, p.OS, p.Arch)
		if err != nil {
			return err
		}
		id, _ := img.Digest()
		size, err := ociimage.CompressedSize(img)
		if err != nil {
			return err
		}
		file := filepath.Join(*out, fmt.Sprintf("image-%s-%s.docker.tar", p.OS, p.Arch))
		if err := ociimage.WriteDockerArchive(idx, p.OS, p.Arch, *tag, file); err != nil {
			return err
		}
		fmt.Printf("  %s/%s %s  %.1f MiB compressed  %s\n", p.OS, p.Arch, id, float64(size)/(1<<20), file)
	}
	return nil
}
