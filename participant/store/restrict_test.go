package store

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// TestSecurityLabels_RoundTrip stores labelled documents both ways
// (PutDocument and a batch) and reads the labels back from the listing, the
// document and a retrieval's header, across a reopen.
func TestSecurityLabels_RoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	putPatient(t, s, "pat-1")
	ctx := context.Background()
	m1 := meta("doc-1", "pat-1", "11506-3", time.Now())
	m1.SecurityLabels = []string{"ETH", "R"}
	if _, err := s.PutDocument(ctx, m1, bytes.NewReader([]byte("x"))); err != nil {
		t.Fatal(err)
	}
	m2 := meta("doc-2", "pat-1", "11506-3", time.Now())
	m2.SecurityLabels = []string{"HIV"}
	if err := s.PutDocuments(ctx, []NewDocument{{Meta: m2, Content: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string][]string{"doc-1": {"ETH", "R"}, "doc-2": {"HIV"}}
	docs, err := s.Documents([]string{"pat-1"}, Filter{})
	if err != nil || len(docs) != 2 {
		t.Fatalf("Documents = %d, %v; want 2", len(docs), err)
	}
	for _, d := range docs {
		if !slices.Equal(d.SecurityLabels, want[d.Id]) {
			t.Errorf("listing %s: labels %v, want %v", d.Id, d.SecurityLabels, want[d.Id])
		}
		one, err := s.Document(d.Id)
		if err != nil || !slices.Equal(one.SecurityLabels, want[d.Id]) {
			t.Errorf("Document(%s): labels %v (%v), want %v", d.Id, one.GetSecurityLabels(), err, want[d.Id])
		}
		header, _, _ := stream(t, s, d.Id)
		if !slices.Equal(header.SecurityLabels, want[d.Id]) {
			t.Errorf("retrieval header %s: labels %v, want %v", d.Id, header.SecurityLabels, want[d.Id])
		}
	}
}

// TestRestrictions_SetReadClearAndSurviveReopen checks a member's local
// restrictions of its patients.
func TestRestrictions_SetReadClearAndSurviveReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	putPatient(t, s, "pat-1")
	putPatient(t, s, "pat-22")
	at := timestamppb.New(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	if err := s.SetRestriction(ctx, &qhinv1.Restriction{PatientId: "pat-1", Purposes: []string{"T-PYMNT"}, RecordedBy: "op", RecordedAt: at}); err != nil {
		t.Fatalf("SetRestriction: %v", err)
	}
	if err := s.SetRestriction(ctx, &qhinv1.Restriction{PatientId: "pat-22", RecordedBy: "op", RecordedAt: at}); err != nil {
		t.Fatalf("SetRestriction (all exchange): %v", err)
	}
	// Only the member's own patients.
	if err := s.SetRestriction(ctx, &qhinv1.Restriction{PatientId: "pat-404"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetRestriction(unknown patient) = %v, want ErrNotFound", err)
	}
	if err := s.SetRestriction(ctx, &qhinv1.Restriction{}); err == nil {
		t.Error("SetRestriction(no patient id) succeeded")
	}
	s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	got, err := s.RestrictionsOf([]string{"pat-1", "pat-22", "pat-3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || !slices.Equal(got["pat-1"].GetPurposes(), []string{"T-PYMNT"}) ||
		got["pat-22"] == nil || len(got["pat-22"].Purposes) != 0 || !got["pat-1"].RecordedAt.AsTime().Equal(at.AsTime()) {
		t.Fatalf("RestrictionsOf = %v", got)
	}
	all, err := s.Restrictions()
	if err != nil || len(all) != 2 || all[0].PatientId != "pat-1" || all[1].PatientId != "pat-22" {
		t.Fatalf("Restrictions = %v, %v; want pat-1, pat-22", all, err)
	}
	for _, tc := range []struct {
		id   string
		want bool
	}{{"pat-1", true}, {"pat-1", false}, {"pat-3", false}} {
		cleared, err := s.ClearRestriction(ctx, tc.id)
		if err != nil || cleared != tc.want {
			t.Errorf("ClearRestriction(%s) = %v, %v; want %v", tc.id, cleared, err, tc.want)
		}
	}
	if got, _ := s.RestrictionsOf([]string{"pat-1", "pat-22"}); len(got) != 1 || got["pat-22"] == nil {
		t.Errorf("after clearing pat-1: %v", got)
	}
}
