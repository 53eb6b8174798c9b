package heapkv

import (
	"bytes"
	"sort"
)

// The positioning internals of Iterator: merging a transaction's buffered
// writes into the index view, changing direction, and the read hull of a
// serializable transaction.
//
// Merging: the iterator keeps two sources positioned in its direction, the
// Pebble iterator (pv says it is at a key) and the sorted buffer (bi), and
// shows the nearer key; at equal keys the buffered write wins and shadows
// the index entry; a buffered delete hides the key. A direction change
// re-seeks both sources strictly beyond the current key, because each
// source's own position may be anywhere past it.

// rememberKey copies the current key when something will need it after
// the move (a direction change, or the read hull of a serializable
// transaction).
func (it *Iterator) rememberKey() []byte {
	if it.rr == nil && len(it.buf) == 0 {
		return nil
	}
	it.kcopy = append(it.kcopy[:0], it.keyLocked()...)
	return it.kcopy
}

// reverse changes direction at the current key: both sources move to the
// nearest key strictly beyond it in direction dir.
func (it *Iterator) reverse(dir int8) bool {
	k := append(it.kcopy[:0], it.keyLocked()...) // before endScan: the walk ahead holds it
	it.kcopy = k
	it.endScan()
	it.beginMove()
	it.dir = dir
	if dir == 1 {
		it.pv = it.pit.SeekGE(k)
		if it.pv && bytes.Equal(it.pit.Key(), k) {
			it.pv = it.pit.Next()
		}
		it.bi = sort.Search(len(it.buf), func(i int) bool { return bytes.Compare(it.buf[i].key, k) > 0 })
	} else {
		it.pv = it.pit.SeekLT(k)
		it.bi = sort.Search(len(it.buf), func(i int) bool { return bytes.Compare(it.buf[i].key, k) >= 0 }) - 1
	}
	it.settle()
	it.observe(k, false)
	return it.valid
}

// settle picks the current key from the two sources in direction it.dir:
// the nearer key, the buffered write when both are at the same key, and
// skipping buffered deletes (and the key they shadow).
func (it *Iterator) settle() {
	if !it.pv {
		// Pebble's iterator stops at an error as at the end: tell them apart
		// here, so a scan never ends early without an error.
		if err := it.pit.Error(); err != nil {
			it.setErr(indexError("iterator", err))
			it.valid, it.inBuf = false, false
			return
		}
	}
	if len(it.buf) == 0 {
		it.valid, it.inBuf = it.pv, false
		return
	}
	for {
		bok := it.bi >= 0 && it.bi < len(it.buf)
		if !bok && !it.pv {
			it.valid, it.inBuf = false, false
			return
		}
		var c int // < 0: buf is nearer in direction dir; 0: same key
		switch {
		case !bok:
			c = 1
		case !it.pv:
			c = -1
		default:
			c = bytes.Compare(it.buf[it.bi].key, it.pit.Key()) * int(it.dir)
		}
		if c > 0 {
			it.valid, it.inBuf, it.shadow = true, false, false
			return
		}
		if it.buf[it.bi].del {
			it.bi += int(it.dir)
			if c == 0 {
				if it.dir > 0 {
					it.pv = it.pit.Next()
				} else {
					it.pv = it.pit.Prev()
				}
			}
			continue
		}
		it.valid, it.inBuf, it.shadow = true, true, c == 0
		return
	}
}

// observe widens a serializable transaction's read hull by what the last
// move looked at: from "from" to the key reached, or to the end of the
// range in the move's direction when it ran off. from is a key the move
// started at (examined, inclusive), or, when fromIsBound, the bound or
// seek key it started from: inclusive going forward, exclusive going
// backward (nil: that end of the key space).
func (it *Iterator) observe(from []byte, fromIsBound bool) {
	if it.rr == nil {
		return
	}
	if it.dir > 0 {
		if it.valid {
			it.rr.extend(from, it.keyLocked(), nil, true)
		} else {
			it.rr.extend(from, nil, it.hi, false)
		}
		return
	}
	lo := it.lo
	if it.valid {
		lo = it.keyLocked()
	}
	if fromIsBound {
		it.rr.extend(lo, nil, from, false)
	} else {
		it.rr.extend(lo, from, nil, true)
	}
}
