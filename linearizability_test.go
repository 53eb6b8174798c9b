package heapkv_test

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/heapkv/heapkv"
)

// History checking. Concurrent clients record each operation with the
// moment it was called and the moment it returned (ticks of one atomic
// counter), and what it saw; a checker then searches for a total order of
// the operations that respects real time (an operation that returned before
// another was called comes first) and in which every operation's result is
// what a sequential model gives. This is the Wing-Gong-Lowe search with
// memoisation of (set of operations placed, model state), the algorithm of
// github.com/anishathalye/porcupine, written out here to keep the module's
// dependencies as they are.
//
//   - Single-key Put, Get and Delete must be linearizable: checked per key
//     against a register.
//   - Serializable transactions, with plain Put and Get mixed in, must be
//     strictly serializable: checked as operations on one map.
//   - The checker rejects histories that are not: hand-made ones (a stale
//     read; write skew) and one the engine really produces under snapshot
//     isolation, which allows write skew.

// histOp is one operation of a history.
type histOp struct {
	client    int
	call, ret int64
	// A transaction (a plain Put, Delete or Get is a transaction of one
	// write or one read): the values it read before writing ("" = absent)
	// and its writes ("" = delete).
	reads  map[string]string
	writes map[string]string
}

func (o histOp) String() string {
	return fmt.Sprintf("c%d[%d,%d] r%v w%v", o.client, o.call, o.ret, o.reads, o.writes)
}

// mapState is the model state: a canonical encoding of a small map.
type mapState string

func encodeState(m map[string]string) mapState {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%q=%q;", k, m[k])
	}
	return mapState(b.String())
}

// histStep applies op to state if op's reads agree with it.
func histStep(state map[string]string, op *histOp) (map[string]string, bool) {
	for k, v := range op.reads {
		if state[k] != v {
			return nil, false
		}
	}
	if len(op.writes) == 0 {
		return state, true
	}
	next := maps.Clone(state)
	for k, v := range op.writes {
		if v == "" {
			delete(next, k)
		} else {
			next[k] = v
		}
	}
	return next, true
}

// histEntry is a call or return event in the search's linked list.
type histEntry struct {
	op         int
	isCall     bool
	match      *histEntry // the call's return event
	prev, next *histEntry
}

// linearizable reports whether ops have a legal sequential order, starting
// from the empty map. If not, it returns the longest prefix it could place.
func linearizable(ops []histOp) (bool, []int) {
	type event struct {
		t      int64
		op     int
		isCall bool
	}
	var evs []event
	for i, o := range ops {
		evs = append(evs, event{o.call, i, true}, event{o.ret, i, false})
	}
	slices.SortFunc(evs, func(a, b event) int { return int(a.t - b.t) })
	head := &histEntry{op: -1}
	calls := make([]*histEntry, len(ops))
	last := head
	for _, ev := range evs {
		e := &histEntry{op: ev.op, isCall: ev.isCall, prev: last}
		last.next = e
		last = e
		if ev.isCall {
			calls[ev.op] = e
		} else {
			calls[ev.op].match = e
		}
	}
	lift := func(c *histEntry) {
		c.prev.next = c.next
		c.next.prev = c.prev
		r := c.match
		r.prev.next = r.next
		if r.next != nil {
			r.next.prev = r.prev
		}
	}
	unlift := func(c *histEntry) {
		r := c.match
		r.prev.next = r
		if r.next != nil {
			r.next.prev = r
		}
		c.prev.next = c
		c.next.prev = c
	}
	type frame struct {
		call  *histEntry
		state map[string]string
	}
	var (
		stack  []frame
		state  = map[string]string{}
		placed = make([]uint64, (len(ops)+63)/64)
		seen   = map[string]bool{}
		best   []int
	)
	key := func(s map[string]string) string {
		var b strings.Builder
		for _, w := range placed {
			fmt.Fprintf(&b, "%x.", w)
		}
		b.WriteString(string(encodeState(s)))
		return b.String()
	}
	e := head.next
	for head.next != nil {
		if e.isCall {
			if next, ok := histStep(state, &ops[e.op]); ok {
				placed[e.op/64] |= 1 << (e.op % 64)
				if k := key(next); !seen[k] {
					seen[k] = true
					stack = append(stack, frame{e, state})
					state = next
					lift(e)
					if len(stack) > len(best) {
						best = best[:0]
						for _, f := range stack {
							best = append(best, f.call.op)
						}
					}
					e = head.next
					continue
				}
				placed[e.op/64] &^= 1 << (e.op % 64)
			}
			e = e.next
			continue
		}
		// A return event: the operation it ends could not be placed.
		if len(stack) == 0 {
			return false, best
		}
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		state = f.state
		placed[f.call.op/64] &^= 1 << (f.call.op % 64)
		unlift(f.call)
		e = f.call.next
	}
	return true, nil
}

// histRecorder collects a history from concurrent clients.
type histRecorder struct {
	clock atomic.Int64
	mu    sync.Mutex
	ops   []histOp
}

func (h *histRecorder) now() int64 { return h.clock.Add(1) }

func (h *histRecorder) add(o histOp) {
	h.mu.Lock()
	h.ops = append(h.ops, o)
	h.mu.Unlock()
}

// byKey splits single-key operations by key (a register per key).
func byKey(ops []histOp) map[string][]histOp {
	out := map[string][]histOp{}
	for _, o := range ops {
		for k := range o.reads {
			out[k] = append(out[k], o)
		}
		for k := range o.writes {
			out[k] = append(out[k], o)
		}
	}
	return out
}

func requireLinearizable(t *testing.T, ops []histOp, what string) {
	t.Helper()
	if ok, best := linearizable(ops); !ok {
		var placed []string
		for _, i := range best {
			placed = append(placed, ops[i].String())
		}
		t.Fatalf("%s: %d operations are not linearizable; longest legal prefix (%d):\n%s\nall:\n%v",
			what, len(ops), len(best), strings.Join(placed, "\n"), ops)
	}
}

func TestLinearizableSingleKey(t *testing.T) {
	db := openTxnDB(t)
	var h histRecorder
	keys := []string{"k0", "k1", "k2"}
	var wg sync.WaitGroup
	for c := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 5))
			for n := range 120 {
				k := keys[rng.IntN(len(keys))]
				o := histOp{client: c}
				var err error
				o.call = h.now()
				switch r := rng.IntN(10); {
				case r < 4:
					var v []byte
					v, err = db.Get([]byte(k))
					if errors.Is(err, heapkv.ErrNotFound) {
						v, err = nil, nil
					}
					o.reads = map[string]string{k: string(v)}
				case r < 9:
					v := fmt.Sprintf("c%d-%d", c, n)
					if rng.IntN(2) == 0 { // a heap value
						v += strings.Repeat(".", 100+rng.IntN(3000))
					}
					err = db.Put([]byte(k), []byte(v))
					o.writes = map[string]string{k: v}
				default:
					err = db.Delete([]byte(k))
					o.writes = map[string]string{k: ""}
				}
				o.ret = h.now()
				if err != nil {
					t.Error(err)
					return
				}
				h.add(o)
			}
		}()
	}
	wg.Wait()
	for k, ops := range byKey(h.ops) {
		requireLinearizable(t, ops, "register "+k)
	}
}

// runTxnClients runs clients that each do serializable (or, if !ser,
// snapshot-isolation) transactions reading two keys then writing one or
// two, mixed with plain Put and Get, and returns the history of what
// committed.
func runTxnClients(t *testing.T, db *heapkv.DB, ser bool, clients, perClient int) []histOp {
	var h histRecorder
	keys := []string{"x", "y", "z", "w"}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 9))
			for n := range perClient {
				o := histOp{client: c, reads: map[string]string{}, writes: map[string]string{}}
				o.call = h.now()
				var err error
				switch r := rng.IntN(10); {
				case r == 0:
					k, v := keys[rng.IntN(len(keys))], fmt.Sprintf("p%d-%d", c, n)
					err = db.Put([]byte(k), []byte(v))
					o.writes[k] = v
				case r == 1:
					k := keys[rng.IntN(len(keys))]
					v, gerr := db.Get([]byte(k))
					if gerr != nil && !errors.Is(gerr, heapkv.ErrNotFound) {
						err = gerr
					}
					o.reads[k] = string(v)
				default:
					readOnly := r == 2
					err = db.UpdateTxn(&heapkv.TxnOptions{Serializable: ser, ReadOnly: readOnly}, func(txn *heapkv.Txn) error {
						for _, i := range rng.Perm(len(keys))[:2] {
							v, err := txn.Get([]byte(keys[i]))
							if err != nil && !errors.Is(err, heapkv.ErrNotFound) {
								return err
							}
							o.reads[keys[i]] = string(v)
						}
						if readOnly {
							return nil
						}
						for range 1 + rng.IntN(2) {
							k, v := keys[rng.IntN(len(keys))], fmt.Sprintf("t%d-%d", c, n)
							if rng.IntN(6) == 0 {
								v = ""
							}
							o.writes[k] = v
						}
						for k, v := range o.writes {
							if v == "" {
								txn.Delete([]byte(k))
							} else {
								txn.Put([]byte(k), []byte(v))
							}
						}
						return nil
					})
				}
				o.ret = h.now()
				switch {
				case errors.Is(err, heapkv.ErrConflict):
					continue // wrote nothing; its reads need not fit any order
				case err != nil:
					t.Error(err)
					return
				}
				h.add(o)
			}
		}()
	}
	wg.Wait()
	return h.ops
}

func TestSerializableTxnHistory(t *testing.T) {
	db := openTxnDB(t)
	for round := range 4 {
		ops := runTxnClients(t, db, true, 5, 40)
		requireLinearizable(t, ops, fmt.Sprintf("round %d: serializable transactions", round))
		// The next round starts from an empty map.
		if err := db.Update(func(txn *heapkv.Txn) error {
			for _, k := range []string{"x", "y", "z", "w"} {
				txn.Delete([]byte(k))
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckerCatchesViolations: the checker is not vacuous.
func TestCheckerCatchesViolations(t *testing.T) {
	w := func(k, v string) map[string]string { return map[string]string{k: v} }
	// A stale read: Get returns 1 after Put 2 returned.
	stale := []histOp{
		{client: 0, call: 1, ret: 2, writes: w("x", "1")},
		{client: 0, call: 3, ret: 4, writes: w("x", "2")},
		{client: 1, call: 5, ret: 6, reads: w("x", "1")},
	}
	ok, _ := linearizable(stale)
	if ok {
		t.Fatal("stale read accepted")
	}
	// The same reads overlapping the second Put are fine.
	stale[2].call = 3
	ok, _ = linearizable(stale)
	if !ok {
		t.Fatal("the same reads overlapping the second Put rejected")
	}

	// Write skew: both read x and y absent, each writes one; no serial
	// order gives both their reads.
	skew := []histOp{
		{client: 0, call: 1, ret: 4, reads: map[string]string{"x": "", "y": ""}, writes: w("x", "1")},
		{client: 1, call: 2, ret: 3, reads: map[string]string{"x": "", "y": ""}, writes: w("y", "1")},
	}
	ok, _ = linearizable(skew)
	if ok {
		t.Fatal("write skew accepted")
	}

	// The engine under snapshot isolation really commits write skew, and
	// the checker catches it; the same interleaving under serializable
	// fails the second commit, and what committed checks out.
	for _, ser := range []bool{false, true} {
		db := openTxnDB(t)
		var h histRecorder
		opts := &heapkv.TxnOptions{Serializable: ser}
		t1, err := db.BeginTxn(opts)
		if err != nil {
			t.Fatal(err)
		}
		t2, err := db.BeginTxn(opts)
		if err != nil {
			t.Fatal(err)
		}
		o1 := histOp{client: 1, call: h.now(), reads: map[string]string{}, writes: w("x", "1")}
		o2 := histOp{client: 2, call: h.now(), reads: map[string]string{}, writes: w("y", "1")}
		for _, p := range []struct {
			txn *heapkv.Txn
			o   *histOp
		}{{t1, &o1}, {t2, &o2}} {
			for _, k := range []string{"x", "y"} {
				v, _ := p.txn.Get([]byte(k))
				p.o.reads[k] = string(v)
			}
			for k, v := range p.o.writes {
				if err := p.txn.Put([]byte(k), []byte(v)); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := t1.Commit(); err != nil {
			t.Fatal(err)
		}
		o1.ret = h.now()
		err = t2.Commit()
		o2.ret = h.now()
		ops := []histOp{o1}
		if err == nil {
			ops = append(ops, o2)
		}
		ok, _ := linearizable(ops)
		if ser {
			if !errors.Is(err, heapkv.ErrConflict) {
				t.Fatalf("err = %v, want %v", err, heapkv.ErrConflict)
			}
			if !ok {
				t.Fatal("checker rejected the serializable history")
			}
		} else {
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				t.Fatal("checker accepted the write skew snapshot isolation committed")
			}
		}
	}
}
