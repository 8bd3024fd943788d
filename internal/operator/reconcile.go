package operator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/edgeport/edgeport/internal/config"
)

// Condition types and reasons the operator writes besides the store's
// Ready condition.
const (
	// ConditionAccepted says whether Edgeport's validation accepted the
	// latest generation; when False the previous accepted version, if
	// any, keeps running and Message lists every field error, as
	// `edgeport apply` prints them.
	ConditionAccepted = "Accepted"

	ReasonApplied  = "Applied"
	ReasonInvalid  = "Invalid"
	ReasonConflict = "Conflict"
)

// kindReconciler applies the custom resources of one kind.
type kindReconciler struct {
	op  *Operator
	def *config.KindDef
}

func (r *kindReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	op := r.op
	store := op.waitStore(ctx)
	if store == nil {
		return reconcile.Result{}, ctx.Err()
	}
	op.applyMu.Lock()
	defer op.applyMu.Unlock()
	key := config.Key{Kind: r.def.Kind, Name: req.Name}
	src := Source(op.o.Namespace, r.def.Kind, req.Name)
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(GVK(r.def.Kind))
	if err := op.c.Get(ctx, req.NamespacedName, u); err != nil {
		if !apierrors.IsNotFound(err) {
			return reconcile.Result{}, err
		}
		op.status.forget(key)
		if _, err := store.Delete(key, src); err == nil {
			op.log.Info("resource deleted", "resource", key.String())
		} else if !errors.Is(err, config.ErrNotFound) {
			op.log.Warn("resource not deleted", "resource", key.String(), "err", err)
		}
		return reconcile.Result{}, op.mirror.sync(ctx, store)
	}
	gen := u.GetGeneration()
	obj, err := decode(op.o.Kinds, u)
	if err != nil {
		op.reject(u, key, gen, ReasonInvalid, err)
		return reconcile.Result{}, nil
	}
	// The Secrets and ConfigMaps it references are on disk before the
	// resource is applied, so that its first start finds them.
	if err := op.mirror.sync(ctx, store, obj); err != nil {
		return reconcile.Result{}, err
	}
	res, out, err := store.Apply(obj, config.ApplyOptions{Source: src})
	if err != nil {
		reason := ReasonInvalid
		if errors.Is(err, config.ErrConflict) {
			reason = ReasonConflict
		}
		op.reject(u, key, gen, reason, err)
		return reconcile.Result{}, nil
	}
	if res != config.Unchanged {
		op.log.Info("resource "+string(res), "resource", key.String(), "generation", gen)
		op.recordApplied(u, gen, res)
	}
	op.status.accepted(key, gen, out.Metadata.Generation)
	return reconcile.Result{}, nil
}

// reject reports that generation gen of u was refused: in the log, in
// its Accepted condition and, once per generation and message, as a
// Warning Event.
func (op *Operator) reject(u *unstructured.Unstructured, key config.Key, gen int64, reason string, err error) {
	msg := fieldErrors(err)
	op.log.Warn("resource rejected", "resource", key.String(), "generation", gen, "err", err)
	if op.status.rejected(key, gen, reason, msg) {
		op.recordRejected(u, gen, reason, msg)
	}
}

// fieldErrors is the message of a rejection: every field error as
// "path: message", as the CLI prints them, else the error itself.
func fieldErrors(err error) string {
	if d := config.Details(err); len(d) > 0 {
		return strings.Join(d, "; ")
	}
	return err.Error()
}

// decode turns a custom resource into the document a user would write
// for --config (apiVersion, kind, name, labels, annotations, spec) and
// decodes it with the kinds registry: the same strict decoding, defaults
// and validation as files and the REST API, with the same field paths.
func decode(kinds *config.Kinds, u *unstructured.Unstructured) (*config.Object, error) {
	meta := map[string]any{"name": u.GetName()}
	if l := u.GetLabels(); len(l) > 0 {
		meta["labels"] = l
	}
	ann := u.GetAnnotations()
	// kubectl's copy of the whole document is no user annotation.
	delete(ann, "kubectl.kubernetes.io/last-applied-configuration")
	if len(ann) > 0 {
		meta["annotations"] = ann
	}
	doc := map[string]any{"apiVersion": u.GetAPIVersion(), "kind": u.GetKind(), "metadata": meta}
	if spec, ok := u.Object["spec"]; ok {
		doc["spec"] = spec
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encoding %s %q: %w", u.GetKind(), u.GetName(), err)
	}
	return kinds.Decode(data)
}

// mirrorReconciler follows Secrets and ConfigMaps: any change rewrites
// the referenced ones on disk (the single-machine code reloads them).
type mirrorReconciler struct{ op *Operator }

func (r *mirrorReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	store := r.op.waitStore(ctx)
	if store == nil {
		return reconcile.Result{}, ctx.Err()
	}
	r.op.applyMu.Lock()
	defer r.op.applyMu.Unlock()
	return reconcile.Result{}, r.op.mirror.sync(ctx, store)
}
