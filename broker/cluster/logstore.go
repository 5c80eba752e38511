package cluster

import (
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// watchedLogStore passes Raft's log writes to the store and remembers
// whether the last one failed: a broker that cannot write its log stops
// serving at once, without waiting for the fence's lease to run out, and
// serves again after a write succeeds.
type watchedLogStore struct {
	raft.LogStore
	path    string
	log     *slog.Logger
	failing atomic.Bool
}

func (w *watchedLogStore) StoreLog(l *raft.Log) error {
	return w.note(w.LogStore.StoreLog(l))
}

func (w *watchedLogStore) StoreLogs(ls []*raft.Log) error {
	return w.note(w.LogStore.StoreLogs(ls))
}

func (w *watchedLogStore) note(err error) error {
	if err != nil {
		if !w.failing.Swap(true) {
			w.log.Error("cannot write the Raft log: this broker stops serving until it can (free disk space or fix the disk; it resumes by itself)",
				"file", w.path, "error", err)
		}
		return err
	}
	if w.failing.Swap(false) {
		w.log.Info("writing the Raft log again", "file", w.path)
	}
	return nil
}
