package synth

// The tables below are the raw material of every generated person. Name lists
// are ordered roughly from common to rare: pickSkewed favours the front, so
// common names repeat the way they do in a real patient index.

var femaleNames = []string{
	"Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah", "Karen",
	"Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly", "Emily", "Donna", "Michelle",
	"Carol", "Amanda", "Dorothy", "Melissa", "Deborah", "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia",
	"Kathleen", "Amy", "Angela", "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen",
	"Samantha", "Katherine", "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria", "Heather",
	"Diane", "Ruth", "Julie", "Olivia", "Joyce", "Virginia", "Victoria", "Kelly", "Lauren", "Christina",
	"Joan", "Evelyn", "Judith", "Megan", "Andrea", "Cheryl", "Hannah", "Jacqueline", "Martha", "Gloria",
	"Teresa", "Ann", "Sara", "Madison", "Frances", "Kathryn", "Janice", "Jean", "Abigail", "Alice",
	"Sophia", "Grace", "Denise", "Amber", "Doris", "Marilyn", "Danielle", "Beverly", "Isabella", "Theresa",
	"Diana", "Natalie", "Brittany", "Charlotte", "Marie", "Kayla", "Alexis", "Lori", "Alexandra", "Tiffany",
	"Rose", "Eleanor", "Josephine", "Valerie", "Gabrielle", "Cassandra", "Jasmine", "Ava", "Mia", "Chloe",
	"Harper", "Zoë", "Renée", "María", "Sofía", "Lucía", "Inés", "Mónica", "Guadalupe", "Ximena",
	"Camila", "Valentina", "Leticia", "Rocío", "Yolanda", "Esperanza", "Mei", "Priya", "Aaliyah", "Imani",
	"Keisha", "Latoya", "Tamika", "Ebony", "Destiny", "Brianna", "Layla", "Nora", "Hazel", "Lily",
	"Ella", "Scarlett", "Penelope", "Stella", "Lucy", "Audrey", "Claire", "Naomi", "Ruby", "Caroline",
	"Wanda", "Bonnie", "Gladys", "Mildred", "Edna", "Irene", "Lillian", "Thelma", "Loretta", "Phyllis",
}

var maleNames = []string{
	"James", "Robert", "John", "Michael", "David", "William", "Richard", "Joseph", "Thomas", "Christopher",
	"Charles", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Andrew", "Paul", "Joshua",
	"Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Jason", "Edward", "Jeffrey", "Ryan",
	"Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen", "Larry", "Justin", "Scott", "Brandon",
	"Benjamin", "Samuel", "Gregory", "Alexander", "Patrick", "Frank", "Raymond", "Jack", "Dennis", "Jerry",
	"Tyler", "Aaron", "José", "Adam", "Nathan", "Henry", "Zachary", "Douglas", "Peter", "Kyle",
	"Noah", "Ethan", "Jeremy", "Walter", "Christian", "Keith", "Roger", "Terry", "Austin", "Sean",
	"Gerald", "Carl", "Harold", "Dylan", "Arthur", "Lawrence", "Jordan", "Jesse", "Bryan", "Bruce",
	"Gabriel", "Logan", "Alan", "Juan", "Albert", "Elijah", "Wayne", "Randy", "Vincent", "Mason",
	"Roy", "Ralph", "Russell", "Bradley", "Philip", "Eugene", "Louis", "Harry", "Howard", "Liam",
	"Oliver", "Lucas", "Aiden", "Carter", "Owen", "Wyatt", "Caleb", "Isaac", "Luke", "Hunter",
	"Connor", "Evan", "Cameron", "Xavier", "Dominic", "Marcus", "Malik", "DeShawn", "Darnell", "Jamal",
	"Andre", "Luis", "Carlos", "Miguel", "Jorge", "Francisco", "Alejandro", "Eduardo", "Guillermo", "Agustín",
	"Joaquín", "Martín", "Andrés", "Ramón", "Héctor", "Raúl", "Sergio", "Manuel", "Fernando", "Javier",
	"Diego", "Mateo", "Hiroshi", "Wei", "Minh", "Arjun", "Omar", "Ahmed", "Theodore", "Frederick",
	"Leonard", "Stanley", "Herbert", "Clarence", "Earl", "Norman", "Melvin", "Floyd", "Lloyd", "Vernon",
}

var familyNames = []string{
	"Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez",
	"Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor", "Moore", "Jackson", "Martin",
	"Lee", "Perez", "Thompson", "White", "Harris", "Sanchez", "Clark", "Ramirez", "Lewis", "Robinson",
	"Walker", "Young", "Allen", "King", "Wright", "Scott", "Torres", "Nguyen", "Hill", "Flores",
	"Green", "Adams", "Nelson", "Baker", "Hall", "Rivera", "Campbell", "Mitchell", "Carter", "Roberts",
	"Gomez", "Phillips", "Evans", "Turner", "Diaz", "Parker", "Cruz", "Edwards", "Collins", "Reyes",
	"Stewart", "Morris", "Morales", "Murphy", "Cook", "Rogers", "Gutierrez", "Ortiz", "Morgan", "Cooper",
	"Peterson", "Bailey", "Reed", "Kelly", "Howard", "Ramos", "Kim", "Cox", "Ward", "Richardson",
	"Watson", "Brooks", "Chavez", "Wood", "James", "Bennett", "Gray", "Mendoza", "Ruiz", "Hughes",
	"Price", "Alvarez", "Castillo", "Sanders", "Patel", "Myers", "Long", "Ross", "Foster", "Jimenez",
	"Powell", "Jenkins", "Perry", "Russell", "Sullivan", "Bell", "Coleman", "Butler", "Henderson", "Barnes",
	"Gonzales", "Fisher", "Vasquez", "Simmons", "Romero", "Jordan", "Patterson", "Alexander", "Hamilton", "Graham",
	"Reynolds", "Griffin", "Wallace", "Moreno", "West", "Cole", "Hayes", "Bryant", "Herrera", "Gibson",
	"Ellis", "Tran", "Medina", "Aguilar", "Stevens", "Murray", "Ford", "Castro", "Marshall", "Owens",
	"Harrison", "Fernandez", "McDonald", "Woods", "Washington", "Kennedy", "Wells", "Vargas", "Henry", "Chen",
	"Freeman", "Webb", "Tucker", "Guzman", "Burns", "Crawford", "Olson", "Simpson", "Porter", "Hunter",
	"Gordon", "Mendez", "Silva", "Shaw", "Snyder", "Mason", "Dixon", "Muñoz", "Hunt", "Hicks",
	"Holmes", "Palmer", "Wagner", "Black", "Robertson", "Boyd", "Rose", "Stone", "Salazar", "Fox",
	"Warren", "Mills", "Meyer", "Rice", "Schmidt", "Garza", "Daniels", "Ferguson", "Nichols", "Stephens",
	"Soto", "Weaver", "Ryan", "Gardner", "Payne", "Grant", "Dunn", "Kelley", "Spencer", "Hawkins",
	"Arnold", "Pierce", "Vazquez", "Hansen", "Peters", "Santos", "Hart", "Bradley", "Knight", "Elliott",
	"Cunningham", "Duncan", "Armstrong", "Hudson", "Carroll", "Lane", "Riley", "Andrews", "Alvarado", "Delgado",
	"Berry", "Perkins", "Hoffman", "Johnston", "Matthews", "Peña", "Richards", "Contreras", "Willis", "Carpenter",
	"Sandoval", "Guerrero", "Chapman", "Rios", "Estrada", "Ortega", "Watkins", "Greene", "Núñez", "Wheeler",
	"O'Brien", "Singh", "Vega", "Wong", "Park", "Yang", "Li", "O'Connell", "Ordóñez", "Ibáñez",
	"Ávila", "Castañeda", "D'Angelo", "O'Neil", "DuBois", "McCoy", "Smith-Jones", "García-López", "Lee-Chang", "Müller",
}

// nicknames maps a formal given name to the short forms people register under.
// It is only ever indexed, never ranged over, so map order cannot leak into
// the output.
var nicknames = map[string][]string{
	"Robert": {"Bob", "Rob", "Bobby"}, "William": {"Bill", "Will", "Billy"}, "Richard": {"Rick", "Rich", "Dick"},
	"James": {"Jim", "Jimmy"}, "John": {"Jack", "Johnny"}, "Michael": {"Mike"}, "Thomas": {"Tom", "Tommy"},
	"Joseph": {"Joe", "Joey"}, "Charles": {"Chuck", "Charlie"}, "Christopher": {"Chris"}, "Daniel": {"Dan", "Danny"},
	"Matthew": {"Matt"}, "Anthony": {"Tony"}, "Steven": {"Steve"}, "Andrew": {"Andy", "Drew"}, "Joshua": {"Josh"},
	"Kenneth": {"Ken", "Kenny"}, "Edward": {"Ed", "Eddie", "Ted"}, "Timothy": {"Tim"}, "Jonathan": {"Jon"},
	"Nicholas": {"Nick"}, "Benjamin": {"Ben"}, "Samuel": {"Sam"}, "Gregory": {"Greg"}, "Alexander": {"Alex"},
	"Patrick": {"Pat"}, "Raymond": {"Ray"}, "Gerald": {"Jerry"}, "Lawrence": {"Larry"}, "Frederick": {"Fred"},
	"Theodore": {"Ted", "Teddy"}, "Zachary": {"Zach"}, "Jeffrey": {"Jeff"}, "Ronald": {"Ron"}, "Donald": {"Don"},
	"Douglas": {"Doug"}, "Peter": {"Pete"}, "David": {"Dave"}, "Stephen": {"Steve"}, "Francisco": {"Paco"},
	"José": {"Pepe"}, "Alejandro": {"Alex"}, "Eduardo": {"Lalo"}, "Guillermo": {"Memo"}, "Leonard": {"Len"},
	"Elizabeth": {"Liz", "Beth", "Betty"}, "Margaret": {"Peggy", "Maggie"}, "Katherine": {"Kate", "Kathy"},
	"Jennifer": {"Jen", "Jenny"}, "Patricia": {"Pat", "Patty", "Trish"}, "Susan": {"Sue"}, "Deborah": {"Debbie"},
	"Rebecca": {"Becky"}, "Christine": {"Chris"}, "Kimberly": {"Kim"}, "Victoria": {"Vicky"}, "Samantha": {"Sam"},
	"Alexandra": {"Alex"}, "Abigail": {"Abby"}, "Jessica": {"Jess"}, "Cynthia": {"Cindy"}, "Dorothy": {"Dot"},
	"Barbara": {"Barb"}, "Pamela": {"Pam"}, "Theresa": {"Terri"}, "Judith": {"Judy"}, "Kathleen": {"Kathy"},
	"Melissa": {"Missy"}, "Stephanie": {"Steph"}, "Jacqueline": {"Jackie"}, "Cassandra": {"Cassie"},
	"Josephine": {"Jo"}, "Eleanor": {"Ellie"}, "Catherine": {"Cathy"}, "Gabrielle": {"Gabby"}, "Amanda": {"Mandy"},
	"Valerie": {"Val"}, "Frances": {"Fran"}, "Guadalupe": {"Lupe"}, "Isabella": {"Bella"}, "Virginia": {"Ginny"},
}

// place is a city with its state and the first three digits of its ZIP codes.
type place struct {
	city, state, zip3 string
}

var places = []place{
	{"New York", "NY", "100"}, {"Brooklyn", "NY", "112"}, {"Buffalo", "NY", "142"}, {"Albany", "NY", "122"},
	{"Boston", "MA", "021"}, {"Worcester", "MA", "016"}, {"Providence", "RI", "029"}, {"Hartford", "CT", "061"},
	{"Portland", "ME", "041"}, {"Burlington", "VT", "054"}, {"Manchester", "NH", "031"}, {"Newark", "NJ", "071"},
	{"Philadelphia", "PA", "191"}, {"Pittsburgh", "PA", "152"}, {"Baltimore", "MD", "212"}, {"Wilmington", "DE", "198"},
	{"Washington", "DC", "200"}, {"Richmond", "VA", "232"}, {"Charlotte", "NC", "282"}, {"Raleigh", "NC", "276"},
	{"Charleston", "SC", "294"}, {"Atlanta", "GA", "303"}, {"Savannah", "GA", "314"}, {"Jacksonville", "FL", "322"},
	{"Miami", "FL", "331"}, {"Tampa", "FL", "336"}, {"Orlando", "FL", "328"}, {"Birmingham", "AL", "352"},
	{"Jackson", "MS", "392"}, {"Nashville", "TN", "372"}, {"Memphis", "TN", "381"}, {"Louisville", "KY", "402"},
	{"Cincinnati", "OH", "452"}, {"Cleveland", "OH", "441"}, {"Columbus", "OH", "432"}, {"Detroit", "MI", "482"},
	{"Grand Rapids", "MI", "495"}, {"Indianapolis", "IN", "462"}, {"Chicago", "IL", "606"}, {"Springfield", "IL", "627"},
	{"Milwaukee", "WI", "532"}, {"Minneapolis", "MN", "554"}, {"Des Moines", "IA", "503"}, {"St. Louis", "MO", "631"},
	{"Kansas City", "MO", "641"}, {"Omaha", "NE", "681"}, {"Wichita", "KS", "672"}, {"Oklahoma City", "OK", "731"},
	{"Little Rock", "AR", "722"}, {"New Orleans", "LA", "701"}, {"Houston", "TX", "770"}, {"Dallas", "TX", "752"},
	{"San Antonio", "TX", "782"}, {"El Paso", "TX", "799"}, {"Albuquerque", "NM", "871"}, {"Española", "NM", "875"},
	{"Denver", "CO", "802"}, {"Cañon City", "CO", "812"}, {"Salt Lake City", "UT", "841"}, {"Boise", "ID", "837"},
	{"Phoenix", "AZ", "850"}, {"Tucson", "AZ", "857"}, {"Las Vegas", "NV", "891"}, {"Los Angeles", "CA", "900"},
	{"San Diego", "CA", "921"}, {"San Francisco", "CA", "941"}, {"Sacramento", "CA", "958"}, {"Fresno", "CA", "937"},
	{"Portland", "OR", "972"}, {"Seattle", "WA", "981"}, {"Spokane", "WA", "992"}, {"Anchorage", "AK", "995"},
	{"Honolulu", "HI", "968"}, {"Billings", "MT", "591"}, {"Fargo", "ND", "581"}, {"Sioux Falls", "SD", "571"},
}

var streetNames = []string{
	"Main", "Oak", "Maple", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park",
	"Church", "Walnut", "Spring", "Ridge", "Lincoln", "Jackson", "Franklin", "Highland", "Sunset", "Willow",
	"Meadow", "Chestnut", "Forest", "Jefferson", "River", "Madison", "Adams", "Center", "Mill", "Union",
	"Cherry", "Hickory", "Dogwood", "Magnolia", "Birch", "Sycamore", "Laurel", "Valley", "Prospect", "Spruce",
	"Broad", "Market", "High", "Water", "School", "Orchard", "Summit", "Fairview", "Greenwood", "Riverside",
	"Martin Luther King Jr", "Camino Real", "Peachtree", "Bayview", "Canyon",
}

var streetSuffixes = []string{"St", "Ave", "Rd", "Dr", "Ln", "Blvd", "Ct", "Way", "Pl", "Ter", "Cir", "Pkwy"}

var streetDirections = []string{"N", "S", "E", "W"}

// docType is a LOINC document type.
type docType struct {
	code, display string
}

var docTypes = []docType{
	{"34133-9", "Summary of episode note"},
	{"11506-3", "Progress note"},
	{"18842-5", "Discharge summary"},
	{"11488-4", "Consult note"},
	{"57133-1", "Referral note"},
}

// condition is a problem a document can be about, with its SNOMED CT and
// ICD-10-CM codes and the youngest age it plausibly applies to.
type condition struct {
	display, snomed, icd10 string
	minAge                 int
}

// acuteConditions is how many conditions at the head of the list apply at
// any age; documents fall back to them.
const acuteConditions = 3

var conditions = []condition{
	{"Acute bronchitis", "10509002", "J20.9", 0},
	{"Otitis media", "65363002", "H66.90", 0},
	{"Urinary tract infection", "68566005", "N39.0", 0},
	{"Asthma", "195967001", "J45.909", 2},
	{"Migraine", "37796009", "G43.909", 8},
	{"Anxiety disorder", "197480006", "F41.9", 10},
	{"Obesity", "414916001", "E66.9", 6},
	{"Low back pain", "279039007", "M54.50", 16},
	{"Essential hypertension", "38341003", "I10", 18},
	{"Hyperlipidemia", "55822004", "E78.5", 18},
	{"Major depressive disorder", "370143000", "F32.9", 14},
	{"Gastroesophageal reflux disease", "235595009", "K21.9", 12},
	{"Hypothyroidism", "40930008", "E03.9", 18},
	{"Type 2 diabetes mellitus", "44054006", "E11.9", 25},
	{"Osteoarthritis of knee", "239873007", "M17.9", 40},
	{"Chronic obstructive pulmonary disease", "13645005", "J44.9", 40},
	{"Atrial fibrillation", "49436004", "I48.91", 45},
	{"Chronic kidney disease stage 3", "433144002", "N18.30", 45},
}

var specialties = []string{
	"Family Medicine", "Internal Medicine", "Cardiology", "Endocrinology", "Pulmonology",
	"Orthopedics", "Emergency Medicine", "Neurology", "Gastroenterology", "Behavioral Health",
}

var planPhrases = []string{
	"Continue current medications. Return in 3 months.",
	"Labs ordered. Follow up after results.",
	"Medication adjusted as discussed. Follow up in 6 weeks.",
	"Patient education provided. Return as needed.",
	"Referred for further evaluation. Follow up in 1 month.",
}

var statusPhrases = []string{"stable", "improving", "worsening", "newly diagnosed", "well controlled"}
