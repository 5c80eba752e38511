package fsm

import (
	bolt "go.etcd.io/bbolt"
)

// txn is a write transaction of the state file that keeps the table digests
// in step with the data. Every write of a command goes through it.
type txn struct {
	f  *FSM
	tx *bolt.Tx
	d  Digests
	// restricts is set by a command that withdraws access (a suspension,
	// fewer purposes): it is acknowledged only once every broker still
	// answering queries holds it.
	restricts bool
	// items collects the results of a batch's commands as they apply.
	items []*Result
}

func (f *FSM) begin(tx *bolt.Tx) (*txn, error) {
	d, ok, err := storedDigests(tx)
	if err != nil {
		return nil, err
	}
	if !ok {
		if d, err = computeDigests(tx); err != nil {
			return nil, err
		}
	}
	return &txn{f: f, tx: tx, d: d}, nil
}

// restrict marks the command being applied as one that withdraws access.
func (t *txn) restrict() { t.restricts = true }

func (t *txn) get(table, k []byte) []byte {
	return t.tx.Bucket(table).Get(k)
}

func (t *txn) put(table, k, v []byte) error {
	b := t.tx.Bucket(table)
	i := tableIndex(table)
	if old := b.Get(k); old != nil {
		t.d.Tables[i].remove(k, old)
	}
	if err := b.Put(k, v); err != nil {
		return err
	}
	t.d.Tables[i].add(k, v)
	return nil
}

// insert puts a key the caller knows is absent (it has just looked), saving
// put's lookup of an old value.
func (t *txn) insert(table, k, v []byte) error {
	if err := t.tx.Bucket(table).Put(k, v); err != nil {
		return err
	}
	t.d.Tables[tableIndex(table)].add(k, v)
	return nil
}

func (t *txn) del(table, k []byte) error {
	b := t.tx.Bucket(table)
	old := b.Get(k)
	if old == nil {
		return nil
	}
	t.d.Tables[tableIndex(table)].remove(k, old)
	return b.Delete(k)
}
