package fhir

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/openqhin/openqhin/participant/store"
)

// Sink is where imported records go: a participant's store while it is
// stopped, or the running participant (participant.Server), which also
// updates its matcher.
type Sink interface {
	// Apply makes every write of the batch in one transaction, or none.
	Apply(ctx context.Context, b store.Batch) error
	// HasPatient reports whether the sink holds patient id already.
	HasPatient(id string) (bool, error)
}

// DefaultMaxBundleSize is the largest bundle an Importer reads when its
// MaxBundleSize is zero.
const DefaultMaxBundleSize = 256 << 20

var (
	// ErrNotBundle is the problem of a JSON file whose resourceType is not
	// "Bundle".
	ErrNotBundle = errors.New("not a FHIR Bundle")
	// ErrNoPatient is the problem of a bundle without a Patient, such as
	// Synthea's hospital and practitioner bundles.
	ErrNoPatient = errors.New("bundle holds no Patient resource")
)

// BundleError is a problem with one bundle's content: it cannot be imported,
// and nothing of it was written. Err never holds PHI; File is the caller's.
type BundleError struct {
	// File is the name the caller gave the bundle. Synthea names its files
	// after the patient, so log it with the same care as the bundle.
	File string
	// Err is the problem; it may wrap ErrNotBundle or ErrNoPatient.
	Err error
}

// Error names the file and the problem.
func (e *BundleError) Error() string { return fmt.Sprintf("fhir import %s: %v", e.File, e.Err) }

// Unwrap returns the problem.
func (e *BundleError) Unwrap() error { return e.Err }

// Skip is a bundle that ImportFiles or ImportDir did not import.
type Skip struct {
	// File is the path as given. Synthea names its files after the patient,
	// so log it with the same care as the bundle.
	File string
	// Reason says what is wrong with the bundle; it holds no PHI.
	Reason string
}

// Result counts what an import wrote.
type Result struct {
	// Files is how many bundles were read, imported or skipped.
	Files int
	// Patients is how many patients were written (created or replaced).
	Patients int
	// Documents is how many documents were written (created or replaced).
	Documents int
	// Skipped lists the bundles that were not imported, in the order read.
	Skipped []Skip
}

func (r *Result) add(o Result) {
	r.Files += o.Files
	r.Patients += o.Patients
	r.Documents += o.Documents
	r.Skipped = append(r.Skipped, o.Skipped...)
}

// Importer writes FHIR bundles into a Sink on behalf of one participant. It
// is safe for concurrent use when its Sink is.
type Importer struct {
	// Sink receives patients and documents.
	Sink Sink
	// ParticipantID is the participant that holds the records; it goes into
	// every document's metadata.
	ParticipantID string
	// MaxBundleSize bounds the bytes read from one bundle or C-CDA
	// document; DefaultMaxBundleSize when zero.
	MaxBundleSize int64
	// IDKey derives the local ids of C-CDA documents and their patients
	// from the identifiers they carry (store.Store.IDKey); C-CDA files are
	// refused without it.
	IDKey []byte
}

// ImportBundle reads one bundle from r and writes its patients and documents
// in one transaction. name identifies the bundle in errors. A bundle whose
// content cannot be imported gives a *BundleError; any other error comes from
// ctx or the Sink. Either way nothing of the bundle was written.
func (im *Importer) ImportBundle(ctx context.Context, r io.Reader, name string) (Result, error) {
	return im.importData(ctx, r, name, im.PlanBundle)
}

// ImportCCDA reads one C-CDA document from r and writes it, with its
// patient, in one transaction, as ImportBundle does.
func (im *Importer) ImportCCDA(ctx context.Context, r io.Reader, name string) (Result, error) {
	return im.importData(ctx, r, name, im.PlanCCDA)
}

func (im *Importer) importData(ctx context.Context, r io.Reader, name string, plan func([]byte) (*Plan, error)) (Result, error) {
	if im.Sink == nil || im.ParticipantID == "" {
		return Result{}, fmt.Errorf("fhir import %s: importer needs a Sink and a ParticipantID", name)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	limit := im.MaxBundleSize
	if limit <= 0 {
		limit = DefaultMaxBundleSize
	}
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return Result{}, &BundleError{File: name, Err: fmt.Errorf("read: %w", err)}
	}
	if int64(len(data)) > limit {
		return Result{}, &BundleError{File: name, Err: fmt.Errorf("larger than %d bytes", limit)}
	}
	p, err := plan(data)
	if err != nil {
		return Result{}, &BundleError{File: name, Err: err}
	}
	if err := im.Sink.Apply(ctx, p.Batch); err != nil {
		return Result{}, fmt.Errorf("fhir import %s: %w", name, err)
	}
	return Result{Files: 1, Patients: len(p.Batch.Patients), Documents: len(p.Batch.Documents)}, nil
}

// ImportFiles imports the bundles at paths in order. A bundle that cannot be
// read or imported is recorded in Skipped with its reason, and the import
// goes on. It stops at the first error of ctx or the Sink, returning what was
// written until then. progress, when not nil, is called after each file.
func (im *Importer) ImportFiles(ctx context.Context, paths []string, progress func(done, total int)) (Result, error) {
	var res Result
	for i, path := range paths {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		r, err := im.importFile(ctx, path)
		var be *BundleError
		switch {
		case errors.As(err, &be):
			res.add(Result{Files: 1, Skipped: []Skip{{File: path, Reason: be.Err.Error()}}})
		case err != nil:
			res.add(r)
			return res, err
		default:
			res.add(r)
		}
		if progress != nil {
			progress(i+1, len(paths))
		}
	}
	return res, nil
}

func (im *Importer) importFile(ctx context.Context, path string) (Result, error) {
	f, err := os.Open(path)
	if err == nil && IsCCDAFile(path) {
		defer f.Close()
		return im.ImportCCDA(ctx, f, path)
	}
	if err != nil {
		// The reason leaves out the path, which Skip.File already holds.
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return Result{}, &BundleError{File: path, Err: fmt.Errorf("open: %w", err)}
	}
	defer f.Close()
	return im.ImportBundle(ctx, f, path)
}

// IsCCDAFile reports whether path names a C-CDA document (*.xml, in any
// case) rather than a FHIR bundle.
func IsCCDAFile(path string) bool { return strings.EqualFold(filepath.Ext(path), ".xml") }

// ImportDir imports every *.json file (a FHIR bundle) and *.xml file (a
// C-CDA document) of dir, in name order, as ImportFiles does. It does not
// descend into subdirectories.
func (im *Importer) ImportDir(ctx context.Context, dir string, progress func(done, total int)) (Result, error) {
	ents, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return Result{}, fmt.Errorf("fhir import: %w", err)
	}
	var paths []string
	for _, e := range ents {
		if e.Type().IsRegular() && (strings.HasSuffix(e.Name(), ".json") || IsCCDAFile(e.Name())) {
			paths = append(paths, filepath.Join(dir, e.Name()))
		}
	}
	return im.ImportFiles(ctx, paths, progress)
}
