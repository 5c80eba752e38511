package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// maxBookLinks caps the links a book keeps: the newest queries' links win.
const maxBookLinks = 10000

// linkBook remembers the opaque links the brokers issued to one identity,
// under the short names qhinctl prints (PARTICIPANT/ID), so that a person
// can pass `--link p2/p2-000004` to the next command. The links hold no
// demographics; the book lives in the user's cache directory, readable by
// the user alone, and forgets links after the brokers' link lifetime.
type linkBook struct {
	path  string
	Links map[string]bookLink `json:"links"`
}

type bookLink struct {
	Link  string    `json:"link"`
	Added time.Time `json:"added"`
}

// bookTTL is how long a remembered link is kept: the brokers' default link
// lifetime. A link the brokers no longer accept is refused by them anyway.
const bookTTL = time.Hour

// openLinkBook opens the book of an identity, named by key. A missing or
// unreadable book is an empty one.
func openLinkBook(key string) *linkBook {
	b := &linkBook{Links: map[string]bookLink{}}
	cache, err := os.UserCacheDir()
	if err != nil {
		return b
	}
	sum := sha256.Sum256([]byte(key))
	b.path = filepath.Join(cache, "openqhin", "links-"+hex.EncodeToString(sum[:8])+".json")
	data, err := os.ReadFile(b.path)
	if err != nil {
		return b
	}
	if json.Unmarshal(data, b) != nil || b.Links == nil {
		b.Links = map[string]bookLink{}
	}
	now := time.Now()
	for k, l := range b.Links {
		if now.Sub(l.Added) > bookTTL {
			delete(b.Links, k)
		}
	}
	return b
}

// add remembers the link under name.
func (b *linkBook) add(name, link string) {
	if link == "" || name == "" {
		return
	}
	b.Links[name] = bookLink{Link: link, Added: time.Now()}
}

// resolve returns the opaque link a name stands for. A value that is not a
// short name is taken as an opaque link itself (as `-o json` prints them).
func (b *linkBook) resolve(flag, name string) (string, error) {
	if l, ok := b.Links[name]; ok {
		return l.Link, nil
	}
	if p, id, ok := strings.Cut(name, "/"); ok && p != "" && id != "" && !strings.Contains(id, "/") && len(name) < 64 {
		return "", fmt.Errorf("--%s %s: no link of that name from this identity's queries of the last %v; find it first (query patients, then query documents): the brokers issue links", flag, name, bookTTL)
	}
	if name == "" {
		return "", fmt.Errorf("--%s: empty", flag)
	}
	return name, nil
}

// save writes the book, keeping the newest maxBookLinks links.
func (b *linkBook) save() error {
	if b.path == "" {
		return nil
	}
	for len(b.Links) > maxBookLinks {
		var oldest string
		for k, l := range b.Links {
			if oldest == "" || l.Added.Before(b.Links[oldest].Added) {
				oldest = k
			}
		}
		delete(b.Links, oldest)
	}
	data, err := json.Marshal(b)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(b.path), ".links-*")
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), b.path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// linkBook opens the book of the identity a query runs as.
func (g *globals) linkBook(as string) (*linkBook, error) {
	cfg, err := g.loadConfig()
	if err != nil {
		return nil, err
	}
	if as == "" && cfg.Participant != nil {
		as = cfg.Participant.ID
	}
	config, err := filepath.Abs(g.config)
	if err != nil {
		config = g.config
	}
	return openLinkBook(config + "\x00" + as), nil
}
