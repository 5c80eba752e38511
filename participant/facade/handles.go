package facade

import (
	"container/list"
	"crypto/rand"
	"encoding/base32"
	"strings"
	"sync"
	"time"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// handles are the ids the facade gives the EHR for what the network found:
// a person (Patient.id), a document (DocumentReference.id and Binary.id), a
// page of search results. Each stands for what the network returned (its
// links, kept as the network gave them and never parsed), is random, expires,
// and may be used only for the purpose and end user it was found for. The
// EHR never names a member's own patient or document ids: a member's records
// are reached through links the network issued, never ids guessed.
type handles struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu   sync.Mutex
	byID map[string]*list.Element
	lru  *list.List // of *handle; front is the newest
}

type handleKind byte

const (
	kindPerson handleKind = iota + 1
	kindDocument
	kindPage
)

type handle struct {
	id      string
	kind    handleKind
	owner   string
	expires time.Time

	links    []*qhinv1.PersonLink     // a person's records at members
	score    float64                  // a person's best score
	rendered []byte                   // a person's Patient resource, for a read
	doc      *qhinv1.DocumentMetadata // a document, as the network listed it
	subject  string                   // a document's person ("Patient/ID")
	page     *page                    // a search's results
}

// page is the result of a document search, served in pages.
type page struct {
	self  string    // the search's self link
	docs  []*handle // document handles, newest first
	issue []issue   // members that did not answer
}

func newHandles(ttl time.Duration, max int) *handles {
	return &handles{ttl: ttl, max: max, now: time.Now, byID: map[string]*list.Element{}, lru: list.New()}
}

var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// newID returns a random id of 32 characters, a valid FHIR id.
func newID() string {
	var b [20]byte
	rand.Read(b[:])
	return strings.ToLower(idEncoding.EncodeToString(b[:]))
}

// add files h under a new id, evicting the oldest handles past the cap.
func (hs *handles) add(h *handle) *handle {
	h.id = newID()
	h.expires = hs.now().Add(hs.ttl)
	hs.mu.Lock()
	defer hs.mu.Unlock()
	hs.byID[h.id] = hs.lru.PushFront(h)
	for hs.lru.Len() > hs.max {
		old := hs.lru.Remove(hs.lru.Back()).(*handle)
		delete(hs.byID, old.id)
	}
	return h
}

// get returns the handle id of kind for owner: a not-found problem when it
// does not exist or has expired, forbidden when another purpose or user
// found it.
func (hs *handles) get(id string, kind handleKind, owner, what string) (*handle, *problem) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	el, ok := hs.byID[id]
	if ok && hs.now().After(el.Value.(*handle).expires) {
		hs.lru.Remove(el)
		delete(hs.byID, id)
		ok = false
	}
	if !ok || el.Value.(*handle).kind != kind {
		return nil, notFound(what, what+": unknown or expired id; ids come from this server's searches and last "+hs.ttl.String())
	}
	h := el.Value.(*handle)
	if h.owner != owner {
		return nil, forbidden(what + ": the id was found for another purpose of use or end user")
	}
	return h, nil
}
