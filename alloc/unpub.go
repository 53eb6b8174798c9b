package alloc

// unpubSet is a set of unpublished claims: a slot table with a free list, so
// that adding and removing a claim costs no hashing and, in the steady state,
// no allocation. Each claim gets a sequence number that is never reused, so
// a stale Claim (already published or aborted) never matches a slot's new
// occupant. Not safe for concurrent use: each cursor's set is guarded by the
// cursor's mu.
type unpubSet struct {
	slots []unpubSlot
	free  []int32 // indices of empty slots
	seq   uint64  // last sequence number handed out
}

type unpubSlot struct {
	seq  uint64 // sequence number of the claim in the slot; 0 if empty
	exts []Extent
}

// add records exts and returns the slot and sequence number that name them.
func (u *unpubSet) add(exts []Extent) (slot int32, seq uint64) {
	u.seq++
	if n := len(u.free); n > 0 {
		slot = u.free[n-1]
		u.free = u.free[:n-1]
	} else {
		slot = int32(len(u.slots))
		u.slots = append(u.slots, unpubSlot{})
	}
	u.slots[slot] = unpubSlot{seq: u.seq, exts: exts}
	return slot, u.seq
}

// remove takes the claim (slot, seq) out of the set and returns its extents;
// ok is false if the set does not hold it.
func (u *unpubSet) remove(slot int32, seq uint64) (exts []Extent, ok bool) {
	if slot < 0 || int(slot) >= len(u.slots) || seq == 0 || u.slots[slot].seq != seq {
		return nil, false
	}
	exts = u.slots[slot].exts
	u.slots[slot] = unpubSlot{}
	u.free = append(u.free, slot)
	return exts, true
}

// forEach calls fn with the extents of every claim in the set.
func (u *unpubSet) forEach(fn func([]Extent)) {
	for _, s := range u.slots {
		if s.seq != 0 {
			fn(s.exts)
		}
	}
}
