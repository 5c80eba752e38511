package match

import (
	_ "embed"
	"slices"
	"strings"
)

// canonicalNames maps a common nickname or spelling variant to the one
// formal given name it most often stands for. Blocking keys and locator
// tokens need one canonical form per name. Comparisons use
// nicknameRelation instead, built from data/nicknames.csv (and these pairs),
// which knows many more names and lets a nickname stand for several formal
// names. Ambiguous nicknames (al, sam, pat) map to their most common formal
// name here.
var canonicalNames = map[string]string{
	// robert
	"bob": "robert", "bobby": "robert", "rob": "robert", "robbie": "robert", "robby": "robert",
	// william
	"bill": "william", "billy": "william", "will": "william", "willy": "william", "willie": "william", "liam": "william",
	// elizabeth
	"liz": "elizabeth", "lizzie": "elizabeth", "lizzy": "elizabeth", "beth": "elizabeth", "betty": "elizabeth",
	"betsy": "elizabeth", "eliza": "elizabeth", "libby": "elizabeth", "elisabeth": "elizabeth",
	// james
	"jim": "james", "jimmy": "james", "jimmie": "james", "jamie": "james",
	// michael
	"mike": "michael", "mikey": "michael", "mick": "michael", "mickey": "michael",
	// katherine and its spellings
	"kate": "katherine", "katie": "katherine", "kathy": "katherine", "kath": "katherine", "kitty": "katherine",
	"cathy": "katherine", "catherine": "katherine", "kathryn": "katherine", "katharine": "katherine",
	// thomas
	"tom": "thomas", "tommy": "thomas",
	// richard
	"dick": "richard", "rick": "richard", "ricky": "richard", "rich": "richard", "richie": "richard",
	// margaret
	"peggy": "margaret", "maggie": "margaret", "meg": "margaret", "margie": "margaret", "marge": "margaret",
	// susan
	"sue": "susan", "susie": "susan", "suzie": "susan", "suzy": "susan",
	// joseph
	"joe": "joseph", "joey": "joseph",
	// anthony
	"tony": "anthony",
	// christopher
	"chris": "christopher", "kit": "christopher",
	// daniel
	"dan": "daniel", "danny": "daniel",
	// david
	"dave": "david", "davy": "david",
	// jennifer
	"jen": "jennifer", "jenn": "jennifer", "jenny": "jennifer",
	// edward
	"ed": "edward", "eddie": "edward", "eddy": "edward", "ned": "edward",
	// alexander
	"alex": "alexander", "alec": "alexander",
	// andrew
	"andy": "andrew", "drew": "andrew",
	// benjamin
	"ben": "benjamin", "benny": "benjamin",
	// charles
	"charlie": "charles", "chuck": "charles", "chas": "charles",
	// frederick
	"fred": "frederick", "freddie": "frederick", "freddy": "frederick",
	// gregory, henry, john
	"greg": "gregory", "hank": "henry", "harry": "henry", "jack": "john", "johnny": "john",
	// lawrence, leonard, matthew, nicholas
	"larry": "lawrence", "len": "leonard", "lenny": "leonard", "matt": "matthew",
	"nick": "nicholas", "nicky": "nicholas",
	// patrick, peter, philip, ronald, samuel
	"pat": "patrick", "paddy": "patrick", "pete": "peter", "phil": "philip",
	"ron": "ronald", "ronnie": "ronald", "sam": "samuel", "sammy": "samuel",
	// stephen, timothy
	"steve": "stephen", "stevie": "stephen", "steven": "stephen", "tim": "timothy", "timmy": "timothy",
	// women's names
	"abby": "abigail", "becky": "rebecca", "cindy": "cynthia", "deb": "deborah", "debbie": "deborah",
	"debra": "deborah", "jess": "jessica", "jessie": "jessica", "kim": "kimberly", "mandy": "amanda",
	"patty": "patricia", "patsy": "patricia", "trish": "patricia", "polly": "mary", "molly": "mary",
	"sally": "sarah", "sara": "sarah", "vicky": "victoria", "vicki": "victoria",
	// Spanish hypocoristics
	"pepe": "jose", "paco": "francisco", "pancho": "francisco", "lupe": "guadalupe", "chuy": "jesus",
	"nacho": "ignacio", "memo": "guillermo", "lalo": "eduardo", "concha": "concepcion",
}

// canonicalGiven returns the canonical form of a normalized given name.
func canonicalGiven(name string) string {
	if c, ok := canonicalNames[name]; ok {
		return c
	}
	return name
}

//go:embed data/nicknames.csv
var nicknamesCSV string

// supplementNicknames are Spanish hypocoristics missing from
// data/nicknames.csv, which lists English names: each a common short form
// and its formal name, as listed in the Spanish section of Wikipedia's
// "Hypocorism" article.
var supplementNicknames = [][2]string{
	{"pepe", "jose"}, {"paco", "francisco"}, {"pancho", "francisco"}, {"lupe", "guadalupe"}, {"chuy", "jesus"},
	{"nacho", "ignacio"}, {"memo", "guillermo"}, {"lalo", "eduardo"}, {"concha", "concepcion"}, {"chema", "jose maria"},
	{"quique", "enrique"}, {"toño", "antonio"}, {"chepe", "jose"}, {"beto", "alberto"}, {"rafa", "rafael"},
}

// nicknameRelation maps a normalized given name to the names it is a
// nickname of or has as nicknames: the lines of data/nicknames.csv read
// both ways, and the supplement. Built once at start.
var nicknameRelation = func() map[string][]string {
	rel := map[string][]string{}
	add := func(a, b string) {
		a, b = normalizeName(a), normalizeName(b)
		if a == "" || b == "" || a == b || slices.Contains(rel[a], b) {
			return
		}
		rel[a] = append(rel[a], b)
		rel[b] = append(rel[b], a)
	}
	for line := range strings.SplitSeq(nicknamesCSV, "\n") {
		names := strings.Split(strings.TrimSpace(line), ",")
		for _, n := range names[1:] {
			add(names[0], n)
		}
	}
	for _, p := range supplementNicknames {
		add(p[0], p[1])
	}
	for canon, formal := range canonicalNames {
		add(canon, formal)
	}
	return rel
}()

// isNickname reports whether two different normalized given names are a
// nickname pair ("bill" and "william", "peggy" and "margaret").
func isNickname(a, b string) bool {
	return slices.Contains(nicknameRelation[a], b)
}
