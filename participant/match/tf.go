package match

// TermFrequencies counts how often each name, postal code and city occurs
// among a set of records, so that agreeing on a common value ("smith",
// "john") weighs less than agreeing on a rare one (splink's term-frequency
// adjustment). The zero value is empty and ready to use; it is not safe for
// concurrent writes.
type TermFrequencies struct {
	n      int
	counts [NumFields]map[string]uint32
}

// tfFields are the fields whose exact agreement is adjusted.
var tfFields = [...]Field{FieldGiven, FieldFamily, FieldPostalCode, FieldCity}

// tfPseudoCount is how many records of average frequency the estimate of a
// value's frequency starts from: a value's frequency is (count + k·u)/(n + k)
// with k = tfPseudoCount and u the model's probability that two random
// records agree exactly, so that a small or new index keeps the model's
// average weights and a large one earns its own.
const tfPseudoCount = 1000

// tfValue returns the value of field f of r that frequencies count.
func tfValue(f Field, r *prepared) string {
	switch f {
	case FieldGiven:
		return r.first()
	case FieldFamily:
		return r.familyJoined
	case FieldPostalCode:
		return r.PostalCode
	case FieldCity:
		return r.City
	}
	return ""
}

// Add counts the values of r.
func (t *TermFrequencies) Add(r Record) {
	p := prepare(r)
	t.add(&p, 1)
}

func (t *TermFrequencies) add(p *prepared, delta int) {
	t.n += delta
	for _, f := range tfFields {
		v := tfValue(f, p)
		if v == "" {
			continue
		}
		if t.counts[f] == nil {
			t.counts[f] = map[string]uint32{}
		}
		c := int(t.counts[f][v]) + delta
		if c <= 0 {
			delete(t.counts[f], v)
		} else {
			t.counts[f][v] = uint32(c)
		}
	}
}

// Len returns the number of records counted.
func (t *TermFrequencies) Len() int { return t.n }

// u returns the term-frequency-adjusted u of exact agreement on field f
// between a and b, and false when f is not adjusted.
func (t *TermFrequencies) u(f Field, a, b *prepared, m *Model) (float64, bool) {
	if f != FieldGiven && f != FieldFamily && f != FieldPostalCode && f != FieldCity {
		return 0, false
	}
	va, vb := tfValue(f, a), tfValue(f, b)
	if va == "" || va != vb {
		return 0, false // equal only as joined given names
	}
	u0 := m.params.Fields[f].Levels[0].U
	c := float64(t.counts[f][va])
	return clampProb((c + tfPseudoCount*u0) / (float64(max(t.n, 0)) + tfPseudoCount)), true
}
