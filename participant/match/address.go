package match

import "strings"

// normalizeStreet normalizes an address line like a name, then writes street
// types, directions and unit designators as the USPS abbreviates them
// ("12 North Elm Street Apartment 4" → "12 n elm st apt 4"). It is
// idempotent.
func normalizeStreet(s string) string {
	n := normalizeName(s)
	if n == "" {
		return ""
	}
	toks := strings.Split(n, " ")
	changed := false
	for i, t := range toks {
		if abbr, ok := streetWords[t]; ok && abbr != t {
			toks[i] = abbr
			changed = true
		}
	}
	if !changed {
		return n
	}
	return strings.Join(toks, " ")
}

// streetNumber splits a normalized street line into its house number (the
// first token when it starts with a digit) and the rest.
func streetNumber(street string) (number, rest string) {
	if street == "" || street[0] < '0' || street[0] > '9' {
		return "", street
	}
	if i := strings.IndexByte(street, ' '); i >= 0 {
		return street[:i], street[i+1:]
	}
	return street, ""
}

// streetWords maps the spellings of street suffixes, directions and
// secondary unit designators to the abbreviations of USPS Publication 28,
// Postal Addressing Standards, appendices C1 (street suffixes) and C2
// (secondary unit designators) and section 233 (directionals); each
// abbreviation maps to itself. Publication 28 is a work of the US
// government. The table holds the common suffixes and their frequent
// variants, not all of C1.
var streetWords = func() map[string]string {
	m := map[string]string{}
	for abbr, spellings := range map[string]string{
		// Street suffixes (C1).
		"aly": "alley allee ally", "ave": "avenue av aven avenu avn avnue", "blvd": "boulevard boul boulv",
		"byp": "bypass bypa bypas byps", "cir": "circle circ circl crcl crcle", "ct": "court crt",
		"cts": "courts", "cv": "cove", "cres": "crescent crsent crsnt", "xing": "crossing crssng",
		"dr": "drive driv drv", "est": "estate", "expy": "expressway exp expr express expw",
		"fwy": "freeway frway frwy", "gdns": "gardens gdn gardn grden grdn", "gln": "glen",
		"grn": "green", "grv": "grove grov", "hts": "heights ht", "hwy": "highway highwy hiway hiwy hway",
		"hl": "hill", "holw": "hollow hllw hollows holws", "is": "island islnd", "jct": "junction jction jctn junctn juncton",
		"ln": "lane", "loop": "loops", "mnr": "manor", "mdws": "meadows mdw medows", "mews": "mews",
		"pkwy": "parkway parkwy pkway pky parkways pkwys", "park": "prk", "pass": "pass", "path": "paths",
		"pike": "pikes", "pl": "place", "plz": "plaza plza", "pt": "point", "rd": "road", "rdg": "ridge rdge",
		"row": "row", "run": "run", "sq": "square sqr sqre squ", "st": "street strt str", "ter": "terrace terr",
		"trce": "trace traces", "trl": "trail trails trls", "tpke": "turnpike trnpk turnpk", "vw": "view",
		"vis": "vista vist vst vsta", "walk": "walks", "way": "wy", "wls": "wells", "clb": "club",
		"crk": "creek", "cswy": "causeway causwa", "ctr": "center cen cent centr centre cnter cntr",
		"esp": "esplanade", "cl": "close",
		// Directionals (section 233).
		"n": "north", "s": "south", "e": "east", "w": "west",
		"ne": "northeast", "nw": "northwest", "se": "southeast", "sw": "southwest",
		// Secondary unit designators (C2).
		"apt": "apartment", "bldg": "building", "fl": "floor", "ste": "suite", "rm": "room",
		"dept": "department", "unit": "unit", "lot": "lot", "spc": "space", "bsmt": "basement",
		"ofc": "office", "ph": "penthouse", "trlr": "trailer",
	} {
		m[abbr] = abbr
		for s := range strings.FieldsSeq(spellings) {
			m[s] = abbr
		}
	}
	return m
}()

// usStates maps the normalized names of US states, the District of Columbia
// and the territories to their USPS codes, and each code to itself.
var usStates = func() map[string]string {
	m := map[string]string{}
	for code, name := range map[string]string{
		"al": "alabama", "ak": "alaska", "az": "arizona", "ar": "arkansas", "ca": "california", "co": "colorado",
		"ct": "connecticut", "de": "delaware", "dc": "district of columbia", "fl": "florida", "ga": "georgia",
		"hi": "hawaii", "id": "idaho", "il": "illinois", "in": "indiana", "ia": "iowa", "ks": "kansas",
		"ky": "kentucky", "la": "louisiana", "me": "maine", "md": "maryland", "ma": "massachusetts",
		"mi": "michigan", "mn": "minnesota", "ms": "mississippi", "mo": "missouri", "mt": "montana",
		"ne": "nebraska", "nv": "nevada", "nh": "new hampshire", "nj": "new jersey", "nm": "new mexico",
		"ny": "new york", "nc": "north carolina", "nd": "north dakota", "oh": "ohio", "ok": "oklahoma",
		"or": "oregon", "pa": "pennsylvania", "ri": "rhode island", "sc": "south carolina", "sd": "south dakota",
		"tn": "tennessee", "tx": "texas", "ut": "utah", "vt": "vermont", "va": "virginia", "wa": "washington",
		"wv": "west virginia", "wi": "wisconsin", "wy": "wyoming", "as": "american samoa", "gu": "guam",
		"mp": "northern mariana islands", "pr": "puerto rico", "vi": "virgin islands",
	} {
		m[code] = code
		m[name] = code
	}
	return m
}()
