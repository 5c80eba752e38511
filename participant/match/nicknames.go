package match

// nicknames maps a normalized nickname or spelling variant to the canonical
// given name it stands for. Keys and values are in the form produced by
// normalizeName (lowercase ASCII letters for these entries). Ambiguous
// nicknames (al, sam, pat as a female name, ...) map to their most common
// canonical name; Score also compares the raw names, so a wrong guess here
// costs nothing.
var nicknames = map[string]string{
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
	if c, ok := nicknames[name]; ok {
		return c
	}
	return name
}
