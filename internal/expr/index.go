package expr

import (
	"strconv"
	"unsafe"
)

// recordIndex maps a field's value to the first record holding it, for
// one version of a dataset (the records slice the lookup returned).
type recordIndex struct {
	first *any // identity of the slice indexed: its first element
	n     int
	ok    bool // every record's value had a key; otherwise scan
	m     map[string]int
}

// equalityInputs recognises `$i == $j` where one input reads the message
// and the other the record, and returns their indexes.
func equalityInputs(src string, inputs []*path) (msg, rec int) {
	n, err := parse(src)
	if err != nil || n.kind != nBinary || n.op != "==" || n.args[0].kind != nVar || n.args[1].kind != nVar {
		return -1, -1
	}
	a, b := n.args[0].idx-1, n.args[1].idx-1
	if a >= len(inputs) || b >= len(inputs) {
		return -1, -1
	}
	ca, cb := inputs[a].src == srcContext, inputs[b].src == srcContext
	switch {
	case ca && !cb:
		return b, a
	case cb && !ca:
		return a, b
	}
	return -1, -1
}

// indexKey renders a scalar so that values equal() considers equal get
// the same key: numbers by their float64 value, strings and booleans
// tagged by type. ok is false for the missing value and compound values,
// which the index does not handle.
func indexKey(v any) (string, bool) {
	switch x := norm(v).(type) {
	case string:
		return "s" + x, true
	case int64:
		return "n" + strconv.FormatFloat(float64(x), 'g', -1, 64), true
	case float64:
		return "n" + strconv.FormatFloat(x, 'g', -1, 64), true
	case bool:
		if x {
			return "t", true
		}
		return "f", true
	}
	return "", false
}

// index returns the index of recs, building it when the dataset changed.
func (ds *dataset) index(recs []any) *recordIndex {
	if len(recs) == 0 {
		return nil
	}
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ix := ds.idx; ix != nil && ix.first == unsafe.SliceData(recs) && ix.n == len(recs) {
		return ix
	}
	ix := &recordIndex{first: unsafe.SliceData(recs), n: len(recs), ok: true, m: make(map[string]int, len(recs))}
	p := ds.inputs[ds.eqRec]
	for i, rec := range recs {
		v, found := walk(rec, p.segs, -1, nil)
		k, ok := indexKey(v)
		if !found || !ok {
			ix.ok = false
			break
		}
		if _, dup := ix.m[k]; !dup {
			ix.m[k] = i
		}
	}
	ds.idx = ix
	return ix
}
