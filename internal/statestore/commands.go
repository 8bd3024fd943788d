package statestore

import (
	"bytes"
	"slices"
	"strings"

	"github.com/edgeport/edgeport/internal/mqtt/packet"
)

// execute runs one request's command and answers it. Validation follows
// the order: syntax and argument count, authorization, timestamps, fencing
// token, condition (NX/NEX), quota.
func (e *executor) execute(r *request, c *chunk) {
	args, err := parseRequest(r.payload, e.args)
	e.args = args
	if err != nil {
		e.fail(r, c, cmdUnknown, errKindSyntax, errSyntaxError)
		return
	}
	name := args[0]
	switch {
	case equalFold(name, "SET"):
		e.set(r, args, c)
	case equalFold(name, "GET"):
		e.get(r, args, c)
	case equalFold(name, "DEL"):
		e.del(r, args, c, false)
	case equalFold(name, "VDEL"):
		e.del(r, args, c, true)
	case equalFold(name, "KEYNOTIFY"):
		e.keyNotify(r, args, c)
	case equalFold(name, KeysCommand):
		e.listKeys(r, args, c)
	default:
		e.fail(r, c, cmdUnknown, errKindSyntax, errUnknownCommand)
	}
}

// fail answers with "-ERR msg".
func (e *executor) fail(r *request, c *chunk, cmd, kind int, msg string) {
	e.delta.requests[cmd]++
	e.delta.errors[kind]++
	e.respondPayload(r, c, appendError(e.out[:0], msg), "", true)
}

func (e *executor) allowed(r *request, key []byte, write bool) bool {
	a := e.opts.Authorizer
	return a == nil || a.Authorize(r.invoker, "", nil, key, write)
}

// times validates the request's __ts (required when needTS) and __ft. It
// returns a non-empty error message when they are unacceptable.
func (e *executor) times(r *request, needTS bool) (ts, ft HLC, msg string) {
	limit := e.now.Add(e.opts.MaxClockSkew).UnixMilli()
	switch {
	case r.hasTS:
		var ok bool
		if ts, ok = ParseHLC(r.ts); !ok {
			return ts, ft, errMalformedTimestamp
		}
		if ts.Wall > limit {
			return ts, ft, errTimestampSkew
		}
	case needTS:
		return ts, ft, errMissingTimestamp
	}
	if r.hasFT {
		var ok bool
		if ft, ok = ParseHLC(r.ft); !ok || ft.IsZero() {
			return ts, ft, errMalformedTimestamp
		}
		if ft.Wall > limit {
			return ts, ft, errFencingSkew
		}
	}
	return ts, ft, ""
}

// checkWrite runs the checks every write shares, in the protocol's order —
// authorization, timestamps (needTS: the request must carry __ts), fencing
// against the key's current entry — and answers the request with the first
// failure. It returns the request's times and the current entry (nil when
// the key is absent).
func (e *executor) checkWrite(r *request, c *chunk, cmd int, key []byte, needTS bool) (ts, ft HLC, cur *entry, ok bool) {
	if !e.allowed(r, key, true) {
		e.fail(r, c, cmd, errKindAuth, errNotAuthorized)
		return ts, ft, nil, false
	}
	ts, ft, msg := e.times(r, needTS)
	if msg != "" {
		e.fail(r, c, cmd, errKindTimestamp, msg)
		return ts, ft, nil, false
	}
	if r.unavailable {
		e.delta.requests[cmd]++
		e.unavailable(r, c)
		return ts, ft, nil, false
	}
	cur = e.keys[string(key)]
	if msg := fence(cur, r, ft); msg != "" {
		e.fail(r, c, cmd, errKindFencing, msg)
		return ts, ft, nil, false
	}
	return ts, ft, cur, true
}

// fence checks the request's fencing token against the key's: a protected
// key needs one at least as new as the one protecting it.
func fence(cur *entry, r *request, ft HLC) string {
	if cur == nil || !cur.fenced() {
		return ""
	}
	if !r.hasFT {
		return errFencingRequired
	}
	if ft.Compare(cur.fence) < 0 {
		return errFencingLower
	}
	return ""
}

func nameProp(name string) packet.UserProperty {
	return packet.UserProperty{Key: propInvalidName, Value: name}
}

// set: SET key value [NX | NEX] [PX milliseconds].
//
// NEX takes no argument: it sets when the key is absent or already holds
// value, which is how the SDKs renew a lease (SET lock me NEX PX 10000).
func (e *executor) set(r *request, args [][]byte, c *chunk) {
	if len(args) < 3 {
		e.fail(r, c, cmdSet, errKindSyntax, errWrongArgs)
		return
	}
	key, value := args[1], args[2]
	if len(key) == 0 {
		e.fail(r, c, cmdSet, errKindSyntax, errKeyLengthZero)
		return
	}
	var nx, nex bool
	var px int64
	for i := 3; i < len(args); i++ {
		a := args[i]
		switch {
		case equalFold(a, "NX") && !nx && !nex:
			nx = true
		case equalFold(a, "NEX") && !nx && !nex:
			nex = true
		case equalFold(a, "PX") && px == 0 && i+1 < len(args):
			ms, ok := parseMillis(args[i+1])
			if !ok {
				e.fail(r, c, cmdSet, errKindSyntax, errSyntaxError)
				return
			}
			px = ms
			i++
		default:
			e.fail(r, c, cmdSet, errKindSyntax, errSyntaxError)
			return
		}
	}
	ts, ft, cur, ok := e.checkWrite(r, c, cmdSet, key, true)
	if !ok {
		return
	}
	if cur != nil && (nx || nex && !bytes.Equal(cur.value, value)) {
		e.delta.requests[cmdSet]++
		e.respondPayload(r, c, appendInt(e.out[:0], -1), cur.ts, true)
		return
	}
	newBytes := e.bytes + int64(len(key)+len(value))
	if cur != nil {
		newBytes -= int64(len(key) + len(cur.value))
	}
	if cur == nil && e.opts.MaxKeys > 0 && e.count >= e.opts.MaxKeys ||
		e.opts.MaxBytes > 0 && newBytes > e.opts.MaxBytes && newBytes > e.bytes {
		e.fail(r, c, cmdSet, errKindQuota, errQuotaExceeded)
		return
	}
	en := &entry{value: bytes.Clone(value), version: e.clock.tick(e.now, &ts)}
	if en.value == nil {
		en.value = []byte{}
	}
	// A key keeps its fencing token; a newer one in the request replaces it.
	if cur != nil {
		en.fence = cur.fence
	}
	if r.hasFT && ft.Compare(en.fence) > 0 {
		en.fence = ft
	}
	if px > 0 {
		en.expiry = e.now.UnixMilli() + px
	}
	en.ts = en.version.String()
	k := string(key)
	e.setKey(k, en, cur)
	if cur == nil {
		e.delta.insertions++
	} else {
		e.delta.modifications++
	}
	e.delta.requests[cmdSet]++
	e.notifyWrite(c, k, en.value, en.version)
	e.respondPayload(r, c, appendOK(e.out[:0]), en.ts, true)
}

// get: GET key.
func (e *executor) get(r *request, args [][]byte, c *chunk) {
	if len(args) != 2 {
		e.fail(r, c, cmdGet, errKindSyntax, errWrongArgs)
		return
	}
	key := args[1]
	if len(key) == 0 {
		e.fail(r, c, cmdGet, errKindSyntax, errKeyLengthZero)
		return
	}
	if !e.allowed(r, key, false) {
		e.fail(r, c, cmdGet, errKindAuth, errNotAuthorized)
		return
	}
	if _, _, msg := e.times(r, false); msg != "" {
		e.fail(r, c, cmdGet, errKindTimestamp, msg)
		return
	}
	if r.unavailable {
		e.delta.requests[cmdGet]++
		e.unavailable(r, c)
		return
	}
	e.delta.requests[cmdGet]++
	e.delta.retrievals++
	cur := e.keys[string(key)]
	if cur == nil {
		e.respondPayload(r, c, appendNull(e.out[:0]), "", true)
		return
	}
	e.respondPayload(r, c, appendBulk(e.out[:0], cur.value), cur.ts, true)
}

// del: DEL key, or VDEL key value (delete only if the key holds value).
func (e *executor) del(r *request, args [][]byte, c *chunk, vdel bool) {
	cmd, want := cmdDel, 2
	if vdel {
		cmd, want = cmdVDel, 3
	}
	if len(args) != want {
		e.fail(r, c, cmd, errKindSyntax, errWrongArgs)
		return
	}
	key := args[1]
	if len(key) == 0 {
		e.fail(r, c, cmd, errKindSyntax, errKeyLengthZero)
		return
	}
	ts, _, cur, ok := e.checkWrite(r, c, cmd, key, false)
	if !ok {
		return
	}
	e.delta.requests[cmd]++
	if cur == nil {
		e.respondPayload(r, c, appendInt(e.out[:0], 0), "", true)
		return
	}
	if vdel && !bytes.Equal(cur.value, args[2]) {
		e.respondPayload(r, c, appendInt(e.out[:0], -1), "", true)
		return
	}
	k := string(key)
	var remote *HLC
	if r.hasTS {
		remote = &ts
	}
	ver := e.clock.tick(e.now, remote)
	e.deleteKey(k, cur, ver)
	e.delta.deletions++
	e.notifyWrite(c, k, nil, ver)
	e.respondPayload(r, c, appendInt(e.out[:0], 1), cur.ts, true)
}

// keyNotify: KEYNOTIFY key [STOP]. Registrations belong to the invoker's
// client ID and are kept in memory only, as the protocol specifies.
func (e *executor) keyNotify(r *request, args [][]byte, c *chunk) {
	if len(args) != 2 && len(args) != 3 {
		e.fail(r, c, cmdKeyNotify, errKindSyntax, errWrongArgs)
		return
	}
	key := args[1]
	if len(key) == 0 {
		e.fail(r, c, cmdKeyNotify, errKindSyntax, errKeyLengthZero)
		return
	}
	stop := len(args) == 3
	if stop && !equalFold(args[2], "STOP") {
		e.fail(r, c, cmdKeyNotify, errKindSyntax, errSyntaxError)
		return
	}
	if r.invoker == "" {
		// The notification topic is derived from the client ID, which MQTT
		// does not tell subscribers; the SDKs send it in __invId/__srcId.
		e.delta.requests[cmdKeyNotify]++
		e.delta.errors[errKindProtocol]++
		e.respondStatus(r, c, 400, "KEYNOTIFY needs the requesting client's ID in the __srcId user property", true,
			nameProp(propSourceID))
		return
	}
	if !stop && !e.allowed(r, key, false) {
		e.fail(r, c, cmdKeyNotify, errKindAuth, errNotAuthorized)
		return
	}
	if _, _, msg := e.times(r, false); msg != "" {
		e.fail(r, c, cmdKeyNotify, errKindTimestamp, msg)
		return
	}
	e.delta.requests[cmdKeyNotify]++
	e.delta.keyNotify++
	k := string(key)
	present := e.watching(r.invoker, k)
	switch {
	case stop && !present:
		e.respondPayload(r, c, appendInt(e.out[:0], 0), "", true)
		return
	case stop:
		e.removeWatch(r.invoker, k)
	case !present:
		e.addWatch(r.invoker, k)
	}
	if stop != !present {
		e.undo = append(e.undo, undoRecord{kind: undoWatch, key: k, client: r.invoker, present: present})
	}
	e.respondPayload(r, c, appendOK(e.out[:0]), "", true)
}

// maxListCount bounds one page of EDGEPORT.KEYS.
const maxListCount = 1000

// listKeys: EDGEPORT.KEYS prefix cursor count (see KeysCommand).
func (e *executor) listKeys(r *request, args [][]byte, c *chunk) {
	if len(args) != 4 {
		e.fail(r, c, cmdKeys, errKindSyntax, errWrongArgs)
		return
	}
	prefix, cursor := string(args[1]), string(args[2])
	n, ok := parseMillis(args[3])
	if !ok || n > maxListCount {
		e.fail(r, c, cmdKeys, errKindSyntax, errSyntaxError)
		return
	}
	e.delta.requests[cmdKeys]++
	var keys []string
	for k := range e.keys {
		if strings.HasPrefix(k, prefix) && k > cursor {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	var page []string
	next := ""
	for _, k := range keys {
		if int64(len(page)) == n {
			next = page[len(page)-1]
			break
		}
		if e.allowed(r, []byte(k), false) {
			page = append(page, k)
		}
	}
	out := appendArrayHeader(e.out[:0], 1+len(page))
	if next == "" {
		out = appendNull(out)
	} else {
		out = appendBulk(out, []byte(next))
	}
	for _, k := range page {
		out = appendBulk(out, []byte(k))
	}
	e.out = out
	e.respondPayload(r, c, out, "", true)
}
