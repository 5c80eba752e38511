package match

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"unicode/utf8"

	qhinv1 "github.com/openqhin/openqhin/proto/qhin/v1"
)

// LabeledRecord is one row of an evaluation file: a record and the person
// it truly belongs to.
type LabeledRecord struct {
	// ID is the row's id column, or its line number when the file has none.
	ID string
	// Truth is the true entity id: rows with the same Truth are the same
	// person.
	Truth string
	// Line is the line the row starts on.
	Line   int
	Record Record
}

// CSV columns [ReadCSV] reads. Any other column is ignored.
var csvColumns = []string{"id", "truth", "given", "family", "birth_date", "gender", "postal_code", "phone", "address_line", "city", "state"}

// Limits of [ReadCSV].
const (
	maxCSVField   = 1024
	maxCSVRecords = 10_000_000
)

// ErrCSV reports an evaluation file that cannot be read. Its messages name
// the line and column, never a value.
var ErrCSV = errors.New("bad evaluation file")

// ReadCSV reads an evaluation file: a header naming any of the columns id,
// truth, given, family, birth_date, gender, postal_code, phone,
// address_line, city, state (truth is required; other columns are ignored),
// then one record per row, every row with as many fields as the header.
// Quoted fields may hold commas and newlines. A value the matcher cannot
// read (a birth date that is no date, a phone without enough digits) counts
// as unknown, whatever its year: an archive of deceased persons is valid
// input. A field that is not UTF-8 or longer than 1024 bytes, a row without
// truth, a repeated id, or a malformed row is an error that names the line
// and the column (1-based), never the value.
func ReadCSV(r io.Reader) ([]LabeledRecord, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	first, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: line 1: no header", ErrCSV)
	}
	if err != nil {
		return nil, csvError(err)
	}
	header := slices.Clone(first) // Read reuses its slice
	col := map[string]int{}
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		header[i] = h
		if !slices.Contains(csvColumns, h) {
			continue
		}
		if j, dup := col[h]; dup {
			return nil, fmt.Errorf("%w: line 1, column %d: column %s repeats column %d", ErrCSV, i+1, h, j+1)
		}
		col[h] = i
	}
	if _, ok := col["truth"]; !ok {
		return nil, fmt.Errorf("%w: line 1: the header has no truth column (the true entity id of each row)", ErrCSV)
	}
	var out []LabeledRecord
	ids := map[string]int{}
	for {
		row, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, csvError(err)
		}
		line, _ := cr.FieldPos(0)
		if len(out) == maxCSVRecords {
			return nil, fmt.Errorf("%w: line %d: more than %d records", ErrCSV, line, maxCSVRecords)
		}
		at := func(i int) string {
			l, _ := cr.FieldPos(i)
			return fmt.Sprintf("line %d, column %d (%s)", l, i+1, columnName(header, i))
		}
		for i, v := range row {
			if len(v) > maxCSVField {
				return nil, fmt.Errorf("%w: %s: longer than %d bytes", ErrCSV, at(i), maxCSVField)
			}
			if !utf8.ValidString(v) {
				return nil, fmt.Errorf("%w: %s: not valid UTF-8", ErrCSV, at(i))
			}
		}
		get := func(name string) string {
			if i, ok := col[name]; ok {
				return strings.TrimSpace(row[i])
			}
			return ""
		}
		lr := LabeledRecord{ID: get("id"), Truth: get("truth"), Line: line}
		if lr.Truth == "" {
			return nil, fmt.Errorf("%w: %s: required", ErrCSV, at(col["truth"]))
		}
		if i, ok := col["id"]; ok {
			if lr.ID == "" {
				return nil, fmt.Errorf("%w: %s: required when the file has an id column", ErrCSV, at(i))
			}
			if first, dup := ids[lr.ID]; dup {
				return nil, fmt.Errorf("%w: %s: same id as line %d", ErrCSV, at(i), first)
			}
			ids[lr.ID] = line
		} else {
			lr.ID = fmt.Sprintf("line-%d", line)
		}
		d := &qhinv1.Demographics{
			Given: get("given"), Family: get("family"), BirthDate: get("birth_date"), Gender: get("gender"),
			Phone: get("phone"),
			Address: &qhinv1.Address{
				City: get("city"), State: get("state"), PostalCode: get("postal_code"),
			},
		}
		if a := get("address_line"); a != "" {
			d.Address.Lines = []string{a}
		}
		lr.Record = Normalize(d)
		out = append(out, lr)
	}
	return out, nil
}

// csvError turns an encoding/csv error into one that names the line and
// column.
func csvError(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		switch {
		case errors.Is(pe.Err, csv.ErrFieldCount):
			return fmt.Errorf("%w: line %d: a different number of fields than the header", ErrCSV, pe.StartLine)
		default:
			return fmt.Errorf("%w: line %d, byte %d: %v", ErrCSV, pe.Line, pe.Column, pe.Err)
		}
	}
	return fmt.Errorf("%w: %w", ErrCSV, err)
}

// columnName names a column for an error: its header when that is one of
// the known columns, else "column".
func columnName(header []string, i int) string {
	if i < len(header) && slices.Contains(csvColumns, header[i]) {
		return header[i]
	}
	return "column"
}
