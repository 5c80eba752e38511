package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

const (
	keyOne = "1111111111111111"
	keyTwo = "2222222222222222"
)

func tk(b byte) Token {
	var t Token
	t[0] = b
	return t
}

// queue drains what is queued, as the member's publisher does, and
// returns it as "+k:t" (publish) and "-k:t" (withdraw) strings, sorted.
func queue(t *testing.T, s *Store) string {
	t.Helper()
	var out []string
	for {
		c, ok, err := s.PendingTokens(2)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		sign := "-"
		if c.Publish {
			sign = "+"
		}
		for _, tok := range c.Tokens {
			out = append(out, fmt.Sprintf("%s%s:%d", sign, c.KeyID[:1], tok[0]))
		}
		if err := s.AckTokens(c); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func putPatients(t *testing.T, s *Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if err := s.PutPatient(context.Background(), id, &qhinv1.Demographics{Given: "G", Family: "F"}); err != nil {
			t.Fatal(err)
		}
	}
}

func setTokens(t *testing.T, s *Store, id, key string, toks ...byte) int {
	t.Helper()
	var ts []Token
	for _, b := range toks {
		ts = append(ts, tk(b))
	}
	n, err := s.SetTokens(context.Background(), []PatientTokens{{PatientID: id, KeyID: key, Tokens: ts}})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestTokens_PublishedWithTheFirstPatientWithdrawnWithTheLast(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	putPatients(t, s, "a", "b")
	setTokens(t, s, "a", keyOne, 1, 2)
	setTokens(t, s, "b", keyOne, 2, 3) // b shares token 2 with a (twins, one phone)
	if got := queue(t, s); got != "+1:1 +1:2 +1:3" {
		t.Fatalf("queued %q", got)
	}
	if n := setTokens(t, s, "a", keyOne, 2, 1); n != 0 {
		t.Errorf("the same tokens again changed %d patients", n)
	}
	// a's demographics change: token 1 goes, 4 comes; 2 stays (b has it).
	setTokens(t, s, "a", keyOne, 2, 4)
	if got := queue(t, s); got != "+1:4 -1:1" {
		t.Fatalf("after a changed: %q", got)
	}
	if err := s.DeletePatient(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s); got != "-1:4" {
		t.Fatalf("after deleting a: %q (token 2 is still b's)", got)
	}
	if err := s.DeletePatient(ctx, "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting again: %v", err)
	}
	if _, err := s.Patient("a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted patient still there: %v", err)
	}
	if err := s.DeletePatient(ctx, "b"); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s); got != "-1:2 -1:3" {
		t.Fatalf("after deleting b: %q", got)
	}
	if counts, _ := s.TokenCounts(); len(counts) != 0 {
		t.Errorf("tokens left: %v", counts)
	}
}

func TestTokens_KeyRotationPublishesTheNewBeforeWithdrawingTheOld(t *testing.T) {
	s := openStore(t)
	putPatients(t, s, "a", "b")
	setTokens(t, s, "a", keyOne, 1)
	setTokens(t, s, "b", keyOne, 2)
	queue(t, s)
	if n, _ := s.AddAliasTokens(context.Background(), "a", keyOne, []Token{tk(9)}, 4); n != 1 {
		t.Fatalf("alias added %d", n)
	}
	queue(t, s)
	setTokens(t, s, "a", keyTwo, 5)
	setTokens(t, s, "b", keyTwo, 6)
	first, ok, err := s.PendingTokens(10)
	if err != nil || !ok || !first.Publish || first.KeyID != keyTwo {
		t.Fatalf("first batch after rotation: %+v %v %v, want the new key's publications", first, ok, err)
	}
	if got := queue(t, s); got != "+2:5 +2:6 -1:1 -1:2 -1:9" {
		t.Fatalf("rotation queued %q", got)
	}
	if _, _, aliases, _ := s.PatientTokensOf("a"); len(aliases) != 0 {
		t.Errorf("aliases of the old key survived the rotation: %v", aliases)
	}
}

func TestTokens_AnAcknowledgementKeepsAChangeOfDirection(t *testing.T) {
	s := openStore(t)
	putPatients(t, s, "a")
	setTokens(t, s, "a", keyOne, 1)
	sent, _, _ := s.PendingTokens(10) // publication of 1 in flight
	if err := s.DeletePatient(context.Background(), "a"); err != nil {
		t.Fatal(err)
	}
	if err := s.AckTokens(sent); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s); got != "-1:1" {
		t.Errorf("after the acknowledgement: %q, want the withdrawal still queued", got)
	}
}

func TestTokens_AliasesAreCappedAndIgnoreOtherKeys(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	putPatients(t, s, "a")
	setTokens(t, s, "a", keyOne, 1)
	queue(t, s)
	if n, _ := s.AddAliasTokens(ctx, "a", keyTwo, []Token{tk(7)}, 2); n != 0 {
		t.Errorf("alias under another key added %d", n)
	}
	if n, _ := s.AddAliasTokens(ctx, "a", keyOne, []Token{tk(1), tk(7), tk(8), tk(8)}, 2); n != 2 {
		t.Errorf("added %d aliases, want 2 (1 is its own, 8 twice)", n)
	}
	s.AddAliasTokens(ctx, "a", keyOne, []Token{tk(9)}, 2)
	_, _, aliases, _ := s.PatientTokensOf("a")
	if len(aliases) != 2 || aliases[0] != tk(8) || aliases[1] != tk(9) {
		t.Errorf("aliases %v, want the newest two (8, 9)", aliases)
	}
	// 7 was pushed out before it was ever sent: only its withdrawal is left.
	if got := queue(t, s); got != "+1:8 +1:9 -1:7" {
		t.Errorf("queued %q", got)
	}
	// Recomputing the patient's own tokens keeps its aliases.
	setTokens(t, s, "a", keyOne, 3)
	if _, _, aliases, _ := s.PatientTokensOf("a"); len(aliases) != 2 {
		t.Errorf("aliases after recomputing: %v", aliases)
	}
}

func TestTokens_PatientsGoneWithoutTheStoreDropTheirTokens(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	putPatients(t, s, "a", "b", "c")
	for i, id := range []string{"a", "b", "c"} {
		setTokens(t, s, id, keyOne, byte(i+1))
	}
	queue(t, s)
	// A tool that knows nothing of tokens removed b.
	if err := s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPatients).Delete([]byte("b")) }); err != nil {
		t.Fatal(err)
	}
	// Setting tokens for a patient that is gone drops them.
	if n := setTokens(t, s, "b", keyOne, 2); n != 1 {
		t.Errorf("set tokens of a vanished patient changed %d", n)
	}
	if got := queue(t, s); got != "-1:2" {
		t.Errorf("queued %q", got)
	}
	putPatients(t, s, "b")
	setTokens(t, s, "b", keyOne, 2)
	queue(t, s)
	s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPatients).Delete([]byte("c")) })
	var gone []string
	for after := ""; ; {
		ids, next, err := s.TokenPatientsWithout(after, 1)
		if err != nil {
			t.Fatal(err)
		}
		gone = append(gone, ids...)
		if next == "" {
			break
		}
		after = next
	}
	if !slices.Equal(gone, []string{"c"}) {
		t.Fatalf("patients gone: %v", gone)
	}
	if err := s.DropTokens(ctx, gone); err != nil {
		t.Fatal(err)
	}
	if got := queue(t, s); got != "-1:3" {
		t.Errorf("queued %q", got)
	}
}

func TestPatientsAfter_PagesInIDOrder(t *testing.T) {
	s := openStore(t)
	putPatients(t, s, "c", "a", "d", "b", "e")
	var got []string
	for after := ""; ; {
		ps, err := s.PatientsAfter(after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(ps) == 0 {
			break
		}
		for _, p := range ps {
			got = append(got, p.ID)
		}
		after = ps[len(ps)-1].ID
	}
	if strings.Join(got, "") != "abcde" {
		t.Errorf("pages gave %v", got)
	}
}

func TestTokens_SetTokensRefusesBadInput(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, err := s.SetTokens(ctx, []PatientTokens{{PatientID: "a", KeyID: "short"}}); err == nil {
		t.Error("short key id accepted")
	}
	if _, err := s.SetTokens(ctx, []PatientTokens{{PatientID: "a", KeyID: keyOne, Tokens: make([]Token, 256)}}); err == nil {
		t.Error("256 tokens accepted")
	}
}
