//! The product-catalogue grammar behind `data synth`: categories, product types with title
//! templates and complementary next types, brands, and attribute vocabularies.
//!
//! Template slots are written `{name}`: `{brand}` and `{model}` come from the item's brand and
//! model number, every other slot is drawn from [`slot_values`].

/// A kind of product, e.g. "Brad Nails".
#[derive(Debug)]
pub struct TypeDef {
    /// Unique key, used by `next` lists.
    pub key: &'static str,
    /// What the product is, for descriptions ("brad nails").
    pub noun: &'static str,
    /// Title template.
    pub template: &'static str,
    /// What it is for (completes "Designed for ...").
    pub use_for: &'static str,
    /// Product types commonly bought next (most likely first).
    pub next: &'static [&'static str],
    /// Used up and bought again.
    pub consumable: bool,
}

/// A top-level category and its product types.
#[derive(Debug)]
pub struct CategoryDef {
    /// Category name.
    pub name: &'static str,
    /// Product types in this category.
    pub types: &'static [TypeDef],
}

/// A brand; `categories` are indices into [`CATEGORIES`].
#[derive(Debug)]
pub struct BrandDef {
    /// Brand name as printed in titles.
    pub name: &'static str,
    /// Model-number prefix.
    pub code: &'static str,
    /// Categories the brand sells in.
    pub categories: &'static [usize],
}

macro_rules! t {
    ($key:literal, $noun:literal, $tpl:literal, $use:literal, [$($n:literal),*], $c:literal) => {
        TypeDef { key: $key, noun: $noun, template: $tpl, use_for: $use, next: &[$($n),*], consumable: $c }
    };
}

/// All categories (indices are used by [`BRANDS`]).
pub const CATEGORIES: &[CategoryDef] = &[
    CategoryDef {
        name: "Power Tools",
        types: &[
            t!(
                "brad_nailer",
                "brad nailer",
                "{brand} {volt} Cordless {gauge} Brad Nailer {model}, Tool Only",
                "trim, baseboard and cabinet work",
                ["brad_nails", "safety_glasses", "ear_plugs"],
                false
            ),
            t!(
                "drill",
                "drill/driver kit",
                "{brand} {volt} Cordless Drill/Driver Kit {model} with 2 Batteries",
                "drilling and driving in wood, metal and plastic",
                ["drill_bits", "wood_screws", "drywall_anchors"],
                false
            ),
            t!(
                "orbital_sander",
                "random orbital sander",
                "{brand} 5-Inch Random Orbital Sander {model}, {amp}",
                "smooth finishing of wood and painted surfaces",
                ["sanding_discs", "dust_masks", "sandpaper"],
                false
            ),
            t!(
                "rotary_tool",
                "rotary tool kit",
                "{brand} Variable Speed Rotary Tool Kit {model} ({pieces}-Piece)",
                "cutting, grinding and polishing small parts",
                ["cut_off_wheels", "cup_brush", "safety_glasses"],
                false
            ),
            t!(
                "heat_gun",
                "heat gun",
                "{brand} Dual Temperature Heat Gun {model}, {watt}",
                "shrinking tubing, stripping paint and bending plastic",
                ["heat_shrink", "work_gloves"],
                false
            ),
            t!(
                "angle_grinder",
                "angle grinder",
                "{brand} 4-1/2 Inch Angle Grinder {model}, {amp}",
                "cutting and grinding metal, tile and masonry",
                [
                    "cut_off_wheels",
                    "flap_discs",
                    "safety_glasses",
                    "work_gloves"
                ],
                false
            ),
        ],
    },
    CategoryDef {
        name: "Fasteners",
        types: &[
            t!(
                "brad_nails",
                "brad nails",
                "{brand} {gauge} {mat} Brad Nails, {len} {pack}",
                "finish nailers and trim work",
                ["wood_glue", "safety_glasses", "tape_measure"],
                true
            ),
            t!(
                "wood_screws",
                "wood screws",
                "{brand} {screwno} x {len} {mat} Wood Screws {model} {pack}",
                "cabinets, decks and general woodworking",
                ["drywall_anchors", "drill_bits", "wood_glue"],
                true
            ),
            t!(
                "hex_bolts",
                "hex bolts",
                "{brand} {dim}-Inch x {len} {mat} Hex Bolts {model} {pack}",
                "machinery, framing and structural assemblies",
                ["hex_nuts", "washers", "thread_locker"],
                true
            ),
            t!(
                "hex_nuts",
                "hex nuts",
                "{brand} {dim}-Inch {mat} Hex Nuts {model} {pack}",
                "pairing with bolts of the same thread",
                ["washers", "thread_locker"],
                true
            ),
            t!(
                "washers",
                "washer assortment",
                "{brand} {mat} Fender Washer Assortment Kit {model} ({pieces}-Piece)",
                "spreading loads under bolts and screws",
                ["hex_bolts", "hex_nuts"],
                true
            ),
            t!(
                "drywall_anchors",
                "drywall anchors",
                "{brand} Self-Drilling Drywall Anchors with Screws {model} {pack}",
                "hanging shelves and fixtures on drywall",
                ["wood_screws", "laser_level"],
                true
            ),
            t!(
                "staples",
                "staples",
                "{brand} {dim}-Inch Leg Heavy Duty Staples {model}, {mat} ({count})",
                "insulation, carpet underlay and roofing felt",
                ["work_gloves", "tape_measure"],
                true
            ),
        ],
    },
    CategoryDef {
        name: "Safety",
        types: &[
            t!(
                "safety_glasses",
                "safety glasses",
                "{brand} Anti-Fog Safety Glasses {model}, {color} Lens {pack}",
                "eye protection on the job site and in the lab",
                ["ear_plugs", "work_gloves"],
                true
            ),
            t!(
                "nitrile_gloves",
                "nitrile gloves",
                "{brand} {mil} Nitrile Disposable Gloves, {color}, {size} ({count})",
                "lab, mechanic and cleaning work",
                ["cleaning_wipes", "safety_glasses"],
                true
            ),
            t!(
                "ear_plugs",
                "ear plugs",
                "{brand} Foam Ear Plugs {model}, {nrr} {pack}",
                "hearing protection around loud machinery",
                ["safety_glasses", "dust_masks"],
                true
            ),
            t!(
                "dust_masks",
                "dust masks",
                "{brand} N95 Disposable Dust Masks {model} {pack}",
                "sanding, sweeping and grinding",
                ["safety_glasses", "sanding_discs"],
                true
            ),
            t!(
                "hard_hat",
                "hard hat",
                "{brand} Full Brim Hard Hat {model} with Ratchet Suspension, {color}",
                "construction and utility work",
                ["safety_glasses", "ear_plugs", "work_gloves"],
                false
            ),
            t!(
                "work_gloves",
                "work gloves",
                "{brand} Cut Resistant Work Gloves {model}, {size} {pack}",
                "handling sheet metal, glass and rough lumber",
                ["safety_glasses", "hard_hat"],
                true
            ),
        ],
    },
    CategoryDef {
        name: "Abrasives & Bits",
        types: &[
            t!(
                "sanding_discs",
                "hook-and-loop sanding discs",
                "{brand} 5-Inch 8-Hole Hook and Loop Sanding Discs, {grit} {pack}",
                "random orbital sanders",
                ["sanding_discs", "dust_masks", "sandpaper"],
                true
            ),
            t!(
                "sandpaper",
                "sandpaper sheets",
                "{brand} {grit} Wet/Dry Sandpaper Sheets, 9 x 11 Inch {pack}",
                "hand sanding, polishing and auto body work",
                ["sanding_discs", "wood_glue"],
                true
            ),
            t!(
                "cup_brush",
                "cup brush",
                "{brand} {dim}-Inch Nylon Abrasive Cup Brush {model}, {grit}",
                "deburring and surface finishing",
                ["cut_off_wheels", "safety_glasses"],
                true
            ),
            t!(
                "cut_off_wheels",
                "cut-off wheels",
                "{brand} 4-1/2 x 0.045 Inch Metal Cut-Off Wheels {model} {pack}",
                "angle grinders and die grinders",
                ["flap_discs", "safety_glasses", "work_gloves"],
                true
            ),
            t!(
                "flap_discs",
                "flap discs",
                "{brand} 4-1/2 Inch Zirconia Flap Discs, {grit} {pack}",
                "blending welds and removing rust",
                ["cut_off_wheels", "work_gloves"],
                true
            ),
            t!(
                "drill_bits",
                "drill bit set",
                "{brand} {bitmat} Drill Bit Set {model} ({pieces}-Piece)",
                "drilling steel, wood and plastic",
                ["wood_screws", "drywall_anchors", "hex_bolts"],
                false
            ),
        ],
    },
    CategoryDef {
        name: "Adhesives & Sealants",
        types: &[
            t!(
                "silicone_sealant",
                "silicone sealant",
                "{brand} {oz} 100% Silicone Sealant {model}, {color}",
                "kitchens, baths and windows",
                ["caulk_gun", "cleaning_wipes"],
                true
            ),
            t!(
                "epoxy",
                "epoxy",
                "{brand} 5-Minute Clear Epoxy Syringe {model}, {oz}",
                "bonding metal, glass, ceramic and wood",
                ["nitrile_gloves", "super_glue"],
                true
            ),
            t!(
                "wood_glue",
                "wood glue",
                "{brand} Waterproof Wood Glue {model}, {oz}",
                "joinery, laminating and furniture repair",
                ["brad_nails", "sandpaper"],
                true
            ),
            t!(
                "thread_locker",
                "thread locker",
                "{brand} Medium Strength Blue Threadlocker {model}, {cap}",
                "keeping nuts and bolts from loosening",
                ["hex_bolts", "hex_nuts"],
                true
            ),
            t!(
                "caulk_gun",
                "caulk gun",
                "{brand} Dripless Caulk Gun {model} with Seal Puncture Tool",
                "applying sealants and adhesives",
                ["silicone_sealant"],
                false
            ),
            t!(
                "super_glue",
                "super glue",
                "{brand} Super Glue Gel Control {model}, {cap} {pack}",
                "quick repairs of rubber, plastic and metal",
                ["epoxy", "nitrile_gloves"],
                true
            ),
        ],
    },
    CategoryDef {
        name: "Lab Supplies",
        types: &[
            t!(
                "beakers",
                "glass beakers",
                "{brand} Borosilicate Glass Griffin Beaker Set {model}, {cap} {pack}",
                "measuring, mixing and heating liquids",
                ["graduated_cylinder", "lab_labels", "ph_meter"],
                true
            ),
            t!(
                "pipette_tips",
                "pipette tips",
                "{brand} Universal Pipette Tips {model}, {tipvol}, Racked ({count})",
                "single and multichannel pipettes",
                ["centrifuge_tubes", "nitrile_gloves"],
                true
            ),
            t!(
                "petri_dishes",
                "petri dishes",
                "{brand} Sterile Polystyrene Petri Dishes {model}, 90 x 15 mm {pack}",
                "culturing bacteria and cells",
                ["lab_labels", "nitrile_gloves", "thermometer"],
                true
            ),
            t!(
                "centrifuge_tubes",
                "centrifuge tubes",
                "{brand} Conical Centrifuge Tubes {model}, {cap}, Sterile {pack}",
                "sample storage and centrifugation",
                ["pipette_tips", "lab_labels"],
                true
            ),
            t!(
                "lab_labels",
                "lab labels",
                "{brand} Cryogenic Lab Labels {model}, {color} ({count})",
                "marking tubes, vials and slides",
                ["centrifuge_tubes", "petri_dishes"],
                true
            ),
            t!(
                "graduated_cylinder",
                "graduated cylinder",
                "{brand} Glass Graduated Cylinder {model}, {cap}, Class A",
                "accurate volume measurement",
                ["beakers", "ph_meter"],
                false
            ),
        ],
    },
    CategoryDef {
        name: "Test & Measurement",
        types: &[
            t!(
                "digital_caliper",
                "digital caliper",
                "{brand} 6-Inch Digital Caliper {model}, {mat}",
                "measuring inside, outside and depth dimensions",
                ["tape_measure", "multimeter"],
                false
            ),
            t!(
                "tape_measure",
                "tape measure",
                "{brand} {tapelen} Tape Measure {model}, {color}",
                "framing, layout and carpentry",
                ["laser_level", "digital_caliper"],
                false
            ),
            t!(
                "laser_level",
                "laser level",
                "{brand} Self-Leveling Cross Line Laser Level {model}, {color} Beam",
                "hanging pictures, cabinets and tile",
                ["tape_measure", "drywall_anchors"],
                false
            ),
            t!(
                "multimeter",
                "digital multimeter",
                "{brand} Auto-Ranging Digital Multimeter {model}, {volts}",
                "testing voltage, current and continuity",
                ["wire_stripper", "electrical_tape"],
                false
            ),
            t!(
                "ph_meter",
                "pH meter",
                "{brand} Pocket pH Meter {model}, 0.01 Resolution",
                "water, hydroponics and lab samples",
                ["beakers", "thermometer"],
                false
            ),
            t!(
                "thermometer",
                "digital thermometer",
                "{brand} Infrared Thermometer Gun {model}, -58 to 1022 F",
                "HVAC, cooking and lab temperature checks",
                ["multimeter", "ph_meter"],
                false
            ),
        ],
    },
    CategoryDef {
        name: "Electrical",
        types: &[
            t!(
                "wire_connectors",
                "wire connectors",
                "{brand} Twist-On Wire Connectors {model}, {awg} {pack}",
                "splicing copper wires in junction boxes",
                ["electrical_tape", "wire_stripper"],
                true
            ),
            t!(
                "heat_shrink",
                "heat shrink tubing",
                "{brand} 2:1 Heat Shrink Tubing Kit {model}, {color} ({pieces}-Piece)",
                "insulating and protecting wire splices",
                ["crimp_terminals", "solder_wire"],
                true
            ),
            t!(
                "electrical_tape",
                "electrical tape",
                "{brand} Vinyl Electrical Tape {model}, 3/4 Inch x 66 ft, {color} {pack}",
                "insulating splices and bundling wires",
                ["wire_connectors", "heat_shrink"],
                true
            ),
            t!(
                "wire_stripper",
                "wire stripper",
                "{brand} Automatic Wire Stripper and Cutter {model}, {awg}",
                "stripping and cutting copper wire",
                ["crimp_terminals", "wire_connectors"],
                false
            ),
            t!(
                "crimp_terminals",
                "crimp terminals",
                "{brand} Insulated Ring Terminals Assortment {model}, {awg} ({pieces}-Piece)",
                "making secure wire terminations",
                ["heat_shrink", "wire_stripper"],
                true
            ),
            t!(
                "solder_wire",
                "solder wire",
                "{brand} 63/37 Rosin Core Solder Wire {model}, {solderdia}, {oz}",
                "electronics and PCB repair",
                ["soldering_iron", "heat_shrink"],
                true
            ),
            t!(
                "soldering_iron",
                "soldering iron kit",
                "{brand} Temperature Controlled Soldering Station {model}, {watt}",
                "electronics assembly and repair",
                ["solder_wire", "heat_shrink"],
                false
            ),
        ],
    },
    CategoryDef {
        name: "HVAC & Plumbing",
        types: &[
            t!(
                "ptfe_tape",
                "PTFE thread seal tape",
                "{brand} PTFE Thread Seal Tape {model}, 1/2 Inch x 520 Inch {pack}",
                "sealing pipe threads against leaks",
                ["pipe_fittings", "hose_clamps"],
                true
            ),
            t!(
                "hose_clamps",
                "hose clamps",
                "{brand} {mat} Worm Gear Hose Clamps {model} ({pieces}-Piece)",
                "securing hoses on pipes and fittings",
                ["ptfe_tape", "pipe_fittings"],
                true
            ),
            t!(
                "run_capacitor",
                "run capacitor",
                "{brand} {mfd} 440V Round Run Capacitor {model}",
                "AC condensers and heat pumps",
                ["hard_start_kit", "contactor", "multimeter"],
                true
            ),
            t!(
                "hard_start_kit",
                "hard start kit",
                "{brand} Relay/Capacitor Hard Start Kit {model} with 500% Starting Torque",
                "compressors that struggle to start",
                ["run_capacitor", "contactor"],
                false
            ),
            t!(
                "pipe_fittings",
                "pipe fittings",
                "{brand} {dim}-Inch {mat} Pipe Fittings Kit {model} ({pieces}-Piece)",
                "water, air and gas lines",
                ["ptfe_tape", "hose_clamps"],
                true
            ),
            t!(
                "contactor",
                "contactor",
                "{brand} 1 Pole 30 Amp Contactor {model}, 24V Coil",
                "AC condensing units",
                ["run_capacitor", "wire_connectors"],
                true
            ),
        ],
    },
    CategoryDef {
        name: "Janitorial & Food Service",
        types: &[
            t!(
                "patty_paper",
                "patty paper",
                "{brand} Hamburger Patty Paper {model}, 5.5 x 5.5 Inch ({count})",
                "separating burger patties and portions",
                ["food_gloves", "deli_containers"],
                true
            ),
            t!(
                "trash_bags",
                "trash bags",
                "{brand} {gal} Heavy Duty Trash Bags {model}, {mil}, {color} ({count})",
                "kitchens, offices and job sites",
                ["paper_towels", "cleaning_wipes"],
                true
            ),
            t!(
                "paper_towels",
                "paper towels",
                "{brand} Multifold Paper Towels {model}, {color} ({count})",
                "restrooms and break rooms",
                ["trash_bags", "cleaning_wipes"],
                true
            ),
            t!(
                "food_gloves",
                "food service gloves",
                "{brand} Powder-Free Vinyl Food Service Gloves, {size} ({count})",
                "food prep and handling",
                ["patty_paper", "deli_containers"],
                true
            ),
            t!(
                "cleaning_wipes",
                "disinfecting wipes",
                "{brand} Disinfecting Wipes {model}, Fresh Scent ({count})",
                "wiping down counters and equipment",
                ["paper_towels", "nitrile_gloves"],
                true
            ),
            t!(
                "deli_containers",
                "deli containers",
                "{brand} Plastic Deli Containers with Lids {model}, {oz} {pack}",
                "soups, sauces and meal prep",
                ["food_gloves", "patty_paper"],
                true
            ),
        ],
    },
    CategoryDef {
        name: "3D Printing",
        types: &[
            t!(
                "pla_filament",
                "PLA filament",
                "{brand} PLA 3D Printer Filament {model}, {filamentdia}, {kg} Spool, {color}",
                "FDM 3D printers",
                ["pla_filament", "nozzle_kit", "build_surface"],
                true
            ),
            t!(
                "petg_filament",
                "PETG filament",
                "{brand} PETG 3D Printer Filament {model}, {filamentdia}, {kg} Spool, {color}",
                "strong, heat resistant prints",
                ["nozzle_kit", "build_surface", "pla_filament"],
                true
            ),
            t!(
                "nozzle_kit",
                "nozzle kit",
                "{brand} MK8 Brass Extruder Nozzle Kit {model} ({pieces}-Piece)",
                "replacing worn or clogged nozzles",
                ["pla_filament", "build_surface"],
                true
            ),
            t!(
                "build_surface",
                "build surface",
                "{brand} Flexible Magnetic Build Plate {model}, 235 x 235 mm",
                "easy print removal",
                ["pla_filament", "petg_filament"],
                false
            ),
            t!(
                "resin",
                "UV resin",
                "{brand} Rapid UV Curing 3D Printer Resin {model}, {color}, 1000 g",
                "LCD and DLP resin printers",
                ["nitrile_gloves", "cleaning_wipes"],
                true
            ),
        ],
    },
];

/// Brands; some sell in several categories.
pub const BRANDS: &[BrandDef] = &[
    BrandDef {
        name: "Kestrel",
        code: "KS",
        categories: &[0, 1, 3],
    },
    BrandDef {
        name: "Ironclad Works",
        code: "ICW",
        categories: &[0, 3],
    },
    BrandDef {
        name: "Tradesman Pro",
        code: "TP",
        categories: &[0, 1, 2, 6],
    },
    BrandDef {
        name: "Voltaris",
        code: "VT",
        categories: &[0, 7],
    },
    BrandDef {
        name: "Hollis & Grant",
        code: "HG",
        categories: &[1, 8],
    },
    BrandDef {
        name: "BoltMaster",
        code: "BM",
        categories: &[1],
    },
    BrandDef {
        name: "Northfield",
        code: "NF",
        categories: &[1, 4],
    },
    BrandDef {
        name: "ClearSight",
        code: "CS",
        categories: &[2],
    },
    BrandDef {
        name: "Guardline",
        code: "GL",
        categories: &[2, 9],
    },
    BrandDef {
        name: "SafeHands",
        code: "SH",
        categories: &[2, 5, 9],
    },
    BrandDef {
        name: "Gritco",
        code: "GC",
        categories: &[3],
    },
    BrandDef {
        name: "Abrasix",
        code: "AX",
        categories: &[3, 0],
    },
    BrandDef {
        name: "Tackstone",
        code: "TS",
        categories: &[4],
    },
    BrandDef {
        name: "BondRite",
        code: "BR",
        categories: &[4, 10],
    },
    BrandDef {
        name: "SealTech",
        code: "ST",
        categories: &[4, 8],
    },
    BrandDef {
        name: "LabCraft",
        code: "LC",
        categories: &[5, 6],
    },
    BrandDef {
        name: "Meridian Scientific",
        code: "MS",
        categories: &[5],
    },
    BrandDef {
        name: "Celsia",
        code: "CE",
        categories: &[5, 6],
    },
    BrandDef {
        name: "Precisa",
        code: "PR",
        categories: &[6],
    },
    BrandDef {
        name: "Amprite",
        code: "AR",
        categories: &[6, 7],
    },
    BrandDef {
        name: "Copperline",
        code: "CL",
        categories: &[7],
    },
    BrandDef {
        name: "Wirewell",
        code: "WW",
        categories: &[7, 8],
    },
    BrandDef {
        name: "CoolFlow",
        code: "CF",
        categories: &[8],
    },
    BrandDef {
        name: "Supco-Tek",
        code: "SK",
        categories: &[8],
    },
    BrandDef {
        name: "Brightpak",
        code: "BP",
        categories: &[9],
    },
    BrandDef {
        name: "Cleanwave",
        code: "CW",
        categories: &[9],
    },
    BrandDef {
        name: "Layerforge",
        code: "LF",
        categories: &[10],
    },
    BrandDef {
        name: "Filamentum",
        code: "FM",
        categories: &[10],
    },
];

/// The values a template slot can take.
pub fn slot_values(slot: &str) -> Option<&'static [&'static str]> {
    Some(match slot {
        "volt" => &["12V", "18V", "20V MAX", "24V"],
        "gauge" => &["15-Gauge", "16-Gauge", "18-Gauge", "23-Gauge"],
        "len" => &[
            "5/8 Inch",
            "3/4 Inch",
            "1 Inch",
            "1-1/4 Inch",
            "1-1/2 Inch",
            "2 Inch",
            "2-1/2 Inch",
            "3 Inch",
        ],
        "pack" => &[
            "(12-Pack)",
            "(25-Pack)",
            "(50-Pack)",
            "(100-Pack)",
            "(250-Pack)",
            "(500-Pack)",
            "(1000-Pack)",
            "(5000-Pack)",
            "(Pack of 6)",
            "(2-Pack)",
        ],
        "mat" => &[
            "Stainless Steel",
            "Galvanized Steel",
            "Zinc-Plated Steel",
            "Brass",
            "Aluminum",
            "Carbon Steel",
        ],
        "bitmat" => &[
            "Cobalt",
            "Titanium Coated",
            "Black Oxide",
            "Carbide Tipped",
            "High Speed Steel",
        ],
        "color" => &[
            "Black", "Clear", "White", "Gray", "Blue", "Orange", "Yellow", "Red", "Green",
        ],
        "size" => &["Small", "Medium", "Large", "X-Large"],
        "dim" => &["1/4", "5/16", "3/8", "1/2", "3/4"],
        "grit" => &[
            "60 Grit", "80 Grit", "120 Grit", "180 Grit", "220 Grit", "400 Grit",
        ],
        "cap" => &["15 mL", "50 mL", "100 mL", "250 mL", "500 mL", "1000 mL"],
        "tipvol" => &["10 uL", "200 uL", "1000 uL"],
        "count" => &[
            "50 Count",
            "100 Count",
            "200 Count",
            "500 Count",
            "1000 Count",
        ],
        "amp" => &["2.0 Amp", "3.0 Amp", "6.0 Amp", "7.5 Amp"],
        "watt" => &["60W", "80W", "1500W", "1800W"],
        "pieces" => &["10", "21", "29", "50", "105", "160", "300"],
        "awg" => &["10-12 AWG", "14-16 AWG", "18-22 AWG"],
        "mfd" => &["5 MFD", "7.5 MFD", "35/5 MFD", "40/5 MFD", "45/5 MFD"],
        "oz" => &["1 oz", "2.8 oz", "4 oz", "8 oz", "10.1 oz", "16 oz"],
        "screwno" => &["#6", "#8", "#10", "#12"],
        "mil" => &["3 Mil", "4 Mil", "5 Mil", "6 Mil", "8 Mil"],
        "nrr" => &["NRR 29dB", "NRR 32dB", "NRR 33dB"],
        "gal" => &["13 Gallon", "33 Gallon", "45 Gallon", "55 Gallon"],
        "volts" => &["600V", "1000V"],
        "tapelen" => &["16 ft", "25 ft", "30 ft", "35 ft"],
        "solderdia" => &["0.6 mm", "0.8 mm", "1.0 mm"],
        "filamentdia" => &["1.75 mm", "2.85 mm"],
        "kg" => &["0.5 kg", "1 kg", "2 kg"],
        _ => return None,
    })
}
