//! Every file of the reference dataset parses, with the expected sizes, and re-writes losslessly.

use std::collections::HashSet;

use sidrec::catalogue::Catalogue;
use sidrec::data::{dataset::DatasetDir, split, Split};
use sidrec::testing::industrial_dir;
use sidrec::Sid;

#[test]
fn splits_parse_with_exact_counts_and_round_trip() {
    let Some(dir) = industrial_dir() else { return };
    let ds = DatasetDir::discover(&dir).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    for (s, expected) in [
        (Split::Train, 10393),
        (Split::Valid, 4532),
        (Split::Test, 4533),
    ] {
        let rows = ds.read_split(s).unwrap();
        assert_eq!(rows.len(), expected, "{s} rows");
        for r in &rows {
            assert!(!r.history_item_id.is_empty() && r.history_item_id.len() <= 10);
            assert_eq!(r.history_item_sid.len(), r.history_item_id.len());
            r.item_sid.parse::<Sid>().unwrap();
        }
        let out = tmp.path().join(format!("{s}.csv"));
        split::write_split(&out, &rows).unwrap();
        assert_eq!(split::read_split(&out).unwrap(), rows, "{s} re-read");
        // pandas' quoting and Python's repr are reproduced exactly, so the bytes match too
        // (the rebuilt train.csv uses CRLF line ends; we write LF as pandas does).
        let original = std::fs::read_to_string(ds.split_path(s)).unwrap();
        let written = std::fs::read_to_string(&out).unwrap();
        assert!(
            written == original.replace("\r\n", "\n"),
            "{s} bytes differ"
        );
    }
}

#[test]
fn items_index_info_and_catalogue() {
    let Some(dir) = industrial_dir() else { return };
    let ds = DatasetDir::discover(&dir).unwrap();
    let items = ds.read_items().unwrap();
    let index = ds.read_index().unwrap();
    let info = ds.read_info().unwrap().unwrap();
    assert_eq!((items.len(), index.len(), info.len()), (3686, 3686, 3686));
    assert_eq!(index.codebook_sizes(), vec![252, 256, 256]);
    assert_eq!(index.sorted_token_strings().len(), 560);
    for (i, line) in info.iter().enumerate() {
        assert_eq!(line.item_id as usize, i, "info line i is item i");
        assert_eq!(index.get(line.item_id), Some(&line.sid));
        assert_eq!(items[&line.item_id].title, line.title);
    }
    let cat = Catalogue::new(&index, &items).unwrap();
    let report = cat.collision_report();
    assert_eq!(report.unique_sids, 3670);
    assert_eq!(report.collided_groups, 15);
    assert_eq!(report.max_group_size, 3);

    // Every SID in the splits is a catalogue SID, and agrees with the item id beside it.
    let sids: HashSet<String> = info.iter().map(|l| l.sid.to_string()).collect();
    for s in Split::ALL {
        for r in ds.read_split(s).unwrap() {
            assert!(sids.contains(&r.item_sid));
            assert_eq!(index.get(r.item_id).unwrap().to_string(), r.item_sid);
            for (id, sid) in r.history_item_id.iter().zip(&r.history_item_sid) {
                assert_eq!(&index.get(*id).unwrap().to_string(), sid);
            }
        }
    }

    // Rewritten metadata and index parse back to the same values.
    let tmp = tempfile::tempdir().unwrap();
    sidrec::data::items::write_items(tmp.path().join("i.json"), &items).unwrap();
    assert_eq!(
        sidrec::data::items::read_items(tmp.path().join("i.json")).unwrap(),
        items
    );
    sidrec::data::index::write_index(tmp.path().join("x.json"), &index).unwrap();
    assert_eq!(
        sidrec::data::index::read_index(tmp.path().join("x.json")).unwrap(),
        index
    );
    // The index is written exactly as Python's json.dump wrote it.
    assert_eq!(
        std::fs::read(tmp.path().join("x.json")).unwrap(),
        std::fs::read(ds.index.unwrap()).unwrap()
    );
}
