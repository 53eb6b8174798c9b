package heapkv_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"

	"github.com/heapkv/heapkv"
)

// exampleDB opens a database in a temporary directory; the returned func
// closes and removes it.
func exampleDB() (*heapkv.DB, func()) {
	dir, err := os.MkdirTemp("", "heapkv-example")
	if err != nil {
		log.Fatal(err)
	}
	db, err := heapkv.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	return db, func() { db.Close(); os.RemoveAll(dir) }
}

// Update runs a read-modify-write transaction; on ErrConflict (another
// commit changed what it wrote, or, when serializable, what it read) the
// caller runs it again.
func ExampleDB_Update() {
	db, done := exampleDB()
	defer done()

	increment := func(txn *heapkv.Txn) error {
		n := 0
		v, err := txn.Get([]byte("counter"))
		switch {
		case errors.Is(err, heapkv.ErrNotFound):
		case err != nil:
			return err
		default:
			if n, err = strconv.Atoi(string(v)); err != nil {
				return err
			}
		}
		return txn.Put([]byte("counter"), []byte(strconv.Itoa(n+1)))
	}
	for range 3 {
		for {
			err := db.Update(increment)
			if errors.Is(err, heapkv.ErrConflict) {
				continue // lost a race: run it again
			}
			if err != nil {
				log.Fatal(err)
			}
			break
		}
	}
	err := db.View(func(txn *heapkv.Txn) error {
		v, err := txn.Get([]byte("counter"))
		fmt.Printf("counter = %s, %v\n", v, err)
		return err
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: counter = 3, <nil>
}

// A manual transaction: Rollback after Commit does nothing, so deferring
// it is always safe.
func ExampleDB_BeginTxn() {
	db, done := exampleDB()
	defer done()

	txn, err := db.BeginTxn(&heapkv.TxnOptions{Serializable: true})
	if err != nil {
		log.Fatal(err)
	}
	defer txn.Rollback()
	if err := txn.Put([]byte("a"), []byte("1")); err != nil {
		log.Fatal(err)
	}
	if err := txn.Put([]byte("b"), []byte("2")); err != nil {
		log.Fatal(err)
	}
	if err := txn.Commit(); err != nil { // both keys, one log record
		log.Fatal(err)
	}
	fmt.Println(txn.Commit())
	// Output: heapkv: transaction already committed or rolled back
}

// NewIter walks keys in order within bounds; Value reads heap values only
// when asked for.
func ExampleDB_NewIter() {
	db, done := exampleDB()
	defer done()
	for _, k := range []string{"apple", "banana", "cherry", "date"} {
		if err := db.Put([]byte(k), []byte("fruit:"+k)); err != nil {
			log.Fatal(err)
		}
	}

	it, err := db.NewIter(&heapkv.IterOptions{LowerBound: []byte("b"), UpperBound: []byte("d")})
	if err != nil {
		log.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.Value()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s = %s\n", it.Key(), v) // valid until the next move
	}
	for ok := it.Last(); ok; ok = it.Prev() {
		fmt.Printf("reverse: %s\n", it.Key())
	}
	if err := it.Close(); err != nil {
		log.Fatal(err)
	}
	// Output:
	// banana = fruit:banana
	// cherry = fruit:cherry
	// reverse: cherry
	// reverse: banana
}

// Scan ranges over the keys with a prefix; an error ends the loop and is
// stored in err.
func ExampleDB_Scan() {
	db, done := exampleDB()
	defer done()
	for i := range 3 {
		if err := db.Put(fmt.Appendf(nil, "user/%d", i), fmt.Appendf(nil, "name-%d", i)); err != nil {
			log.Fatal(err)
		}
	}
	if err := db.Put([]byte("zebra"), []byte("not a user")); err != nil {
		log.Fatal(err)
	}

	var err error
	for k, v := range db.Scan([]byte("user/"), &err) {
		fmt.Printf("%s %s\n", k, v)
	}
	if err != nil {
		log.Fatal(err)
	}
	// Output:
	// user/0 name-0
	// user/1 name-1
	// user/2 name-2
}

// A snapshot keeps seeing the database as of its creation, heap values
// included, however the keys change afterwards.
func ExampleDB_NewSnapshot() {
	db, done := exampleDB()
	defer done()
	big := make([]byte, 100<<10) // in the heap
	if err := db.Put([]byte("doc"), big); err != nil {
		log.Fatal(err)
	}

	snap, err := db.NewSnapshot()
	if err != nil {
		log.Fatal(err)
	}
	defer snap.Close()
	if err := db.Delete([]byte("doc")); err != nil {
		log.Fatal(err)
	}
	v, err := snap.Get([]byte("doc"))
	fmt.Println(len(v), err)
	_, err = db.Get([]byte("doc"))
	fmt.Println(err)
	// Output:
	// 102400 <nil>
	// heapkv: not found
}
