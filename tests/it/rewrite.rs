//! The Parquet-level rewrite on row groups larger than one decode batch (8192 records): batches
//! without matched records take the pass-through path, the others the filtering path; both
//! must give exactly the expected rows, for flat, optional, list and struct columns.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int64Array, ListArray, RecordBatch, StringArray, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Int64Type};
use bytes::Bytes;
use lakepurge::rewrite::{Mode, rewrite};

use crate::common::{ReadBack, assert_read_back};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::properties::WriterProperties;

const ROWS: i64 = 30_000;

fn sample() -> (RecordBatch, Bytes) {
    let ids: Vec<i64> = (0..ROWS).collect();
    let names: StringArray = ids
        .iter()
        .map(|i| (i % 7 != 0).then(|| format!("name-{i}")))
        .collect();
    let tags = ListArray::from_iter_primitive::<Int64Type, _, _>(
        ids.iter()
            .map(|i| (i % 5 != 0).then(|| vec![Some(*i), None, Some(i * 2)])),
    );
    let fields = Fields::from(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
    ]);
    let inner = StructArray::new(
        fields,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 3))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("b{i}")),
            )),
        ],
        Some(ids.iter().map(|i| i % 11 != 0).collect::<Vec<_>>().into()),
    );
    let batch = RecordBatch::try_from_iter(vec![
        ("id", Arc::new(Int64Array::from(ids.clone())) as ArrayRef),
        ("name", Arc::new(names)),
        ("tags", Arc::new(tags)),
        ("inner", Arc::new(inner)),
    ])
    .unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROWS as usize))
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    (batch, Bytes::from(buf))
}

fn read(bytes: Bytes) -> RecordBatch {
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// Rows in the first batch, at a batch boundary and the last row; the decode batch of rows
/// 16384..24575 holds none, so it takes the pass-through path.
const ERASED: [u32; 4] = [5, 8191, 8192, 29_999];

#[test]
fn delete_in_a_large_row_group_removes_exactly_the_rows() {
    let (batch, bytes) = sample();
    let out = rewrite(bytes, &[ERASED.to_vec()], &Mode::Delete, "mem").unwrap();
    assert_eq!(out.rows, ROWS as u64 - ERASED.len() as u64);
    let keep: BooleanArray = (0..ROWS as u32)
        .map(|i| Some(!ERASED.contains(&i)))
        .collect();
    let expected = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
    assert_eq!(read(out.bytes.unwrap()), expected);
}

#[test]
fn redact_in_a_large_row_group_nulls_exactly_the_listed_columns() {
    let (batch, bytes) = sample();
    let mode = Mode::Redact(vec!["name".into(), "tags".into(), "inner".into()]);
    let out = rewrite(bytes, &[ERASED.to_vec()], &mode, "mem").unwrap();
    assert_eq!(out.rows, ROWS as u64);
    let got = read(out.bytes.unwrap());
    assert_eq!(
        got.column(0),
        batch.column(0),
        "a column not redacted changed"
    );
    for c in 1..4 {
        let (g, o) = (got.column(c), batch.column(c));
        for i in 0..ROWS as usize {
            if ERASED.contains(&(i as u32)) {
                assert!(g.is_null(i), "column {c} row {i} not nulled");
            } else {
                assert_eq!(
                    g.slice(i, 1).to_data(),
                    o.slice(i, 1).to_data(),
                    "column {c} row {i} changed"
                );
            }
        }
    }
}

/// The sample in small pages (1000 rows), with or without dictionaries, data page v1 or v2.
fn sample_in_pages(dictionary: bool, v2: bool) -> (RecordBatch, Bytes) {
    let (batch, _) = sample();
    let version = if v2 {
        parquet::file::properties::WriterVersion::PARQUET_2_0
    } else {
        parquet::file::properties::WriterVersion::PARQUET_1_0
    };
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(ROWS as usize))
        .set_data_page_row_count_limit(1000)
        .set_write_batch_size(1000)
        .set_dictionary_enabled(dictionary)
        // parquet-rs's own v2 default for these columns is DELTA encodings, which page
        // surgery leaves to the whole re-encode; PLAIN is what other writers use.
        .set_encoding(parquet::basic::Encoding::PLAIN)
        .set_writer_version(version)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    (batch, Bytes::from(buf))
}

/// The sample in pages without the `erased` rows, checked against the expected rows: the page
/// counts, a label for messages, the new file and its pair for [`assert_read_back`].
fn splice_sample(
    dictionary: bool,
    v2: bool,
    erased: &[u32],
    dir: &std::path::Path,
) -> (lakepurge::rewrite::Rewritten, String, Bytes, ReadBack) {
    let (batch, bytes) = sample_in_pages(dictionary, v2);
    let mut out = rewrite(bytes.clone(), &[erased.to_vec()], &Mode::Delete, "mem").unwrap();
    let case = format!(
        "dictionary {dictionary}, v2 {v2}, erased {erased:?}: {} chunks spliced, {} pages \
         copied, {} cut",
        out.chunks_spliced, out.pages_copied, out.pages_rewritten
    );
    let keep: BooleanArray = (0..ROWS as u32)
        .map(|i| Some(!erased.contains(&i)))
        .collect();
    let expected = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
    let new = out.bytes.take().unwrap();
    assert_eq!(read(new.clone()), expected, "{case}");
    let name = format!("dict-{dictionary}-v2-{v2}-{}", erased.len());
    let pair = write_pair(dir, &name, &bytes, &new, &keep);
    (out, case, new, pair)
}

#[test]
fn page_surgery_cuts_flat_struct_and_list_columns_page_by_page() {
    // None of these records holds a column's min or max, so every chunk (id, name, the list's
    // values, the struct's two fields) takes page surgery; names are unique, so with
    // dictionaries the erased names' entries are dropped and later indices renumbered.
    let erased: [u32; 4] = [5, 8191, 8192, 20_500];
    let dir = tempfile::tempdir().unwrap();
    let mut read_back = Vec::new();
    for dictionary in [false, true] {
        for v2 in [false, true] {
            let (out, case, new, pair) = splice_sample(dictionary, v2, &erased, dir.path());
            read_back.push(pair);
            assert_eq!(out.chunks_spliced, 5, "{case}");
            assert!(out.pages_rewritten >= 5, "{case}");
            // Without dictionaries only the pages holding erased rows are cut. With them, each
            // chunk (of unique values) drops the erased rows' entries, and its pages past the
            // first dropped entry, nearly all here, are renumbered (see the next test).
            if !dictionary {
                assert!(out.pages_copied > 5 * out.pages_rewritten, "{case}");
            }
            // The erased names are in no page, dictionary pages included.
            let reader = parquet::file::serialized_reader::SerializedFileReader::new(new).unwrap();
            use parquet::file::reader::FileReader;
            let rg = reader.get_row_group(0).unwrap();
            for page in rg.get_column_page_reader(1).unwrap() {
                let page = page.unwrap();
                for name in ["name-8191", "name-8192", "name-20500"] {
                    let found = page
                        .buffer()
                        .windows(name.len())
                        .any(|w| w == name.as_bytes());
                    assert!(!found, "{case}: {name} still in a page");
                }
            }
        }
    }
    assert_read_back(&read_back);
}

/// Dropping a dictionary entry renumbers only the pages whose indices reach past it: an erased
/// row in the last page of each chunk (its values the last entries of their dictionaries) leaves
/// every earlier page copied as it was.
#[test]
fn dictionary_renumbering_is_confined_to_pages_past_the_dropped_entry() {
    let erased = [29_500u32];
    let dir = tempfile::tempdir().unwrap();
    let mut read_back = Vec::new();
    for v2 in [false, true] {
        let (out, case, _, pair) = splice_sample(true, v2, &erased, dir.path());
        read_back.push(pair);
        assert_eq!(out.chunks_spliced, 5, "{case}");
        // Per chunk at most the last page and the dictionary rewritten, every other copied.
        assert!(out.pages_rewritten <= 5 * 2, "{case}");
        assert!(out.pages_copied > 10 * out.pages_rewritten, "{case}");
    }
    assert_read_back(&read_back);
}

/// Writes an original and its rewrite to `dir` for [`assert_read_back`]; `keep` marks the
/// original's rows that remain.
fn write_pair(
    dir: &std::path::Path,
    name: &str,
    original: &Bytes,
    rewritten: &Bytes,
    keep: &BooleanArray,
) -> ReadBack {
    let name: String = name
        .chars()
        .map(|c| if c.is_alphanumeric() { c } else { '_' })
        .collect();
    let before = dir.join(format!("{name}-original.parquet"));
    let after = dir.join(format!("{name}-purged.parquet"));
    std::fs::write(&before, original).unwrap();
    std::fs::write(&after, rewritten).unwrap();
    ReadBack {
        original: before,
        purged: after,
        kept: (0..keep.len()).filter(|i| keep.value(*i)).collect(),
    }
}

/// Random files (page sizes, nulls, dictionaries, data page v1/v2, page index or not, codecs,
/// list and struct columns) and random erased rows: the rewrite gives exactly the kept rows,
/// and the id column's statistics are exactly those of the kept values.
#[test]
fn page_surgery_on_random_files_keeps_exactly_the_other_rows() {
    use arrow::array::{AsArray, Int32Array};
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::{EnabledStatistics, WriterVersion};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    let mut spliced_total = 0;
    let dir = tempfile::tempdir().unwrap();
    let mut read_back = Vec::new();
    for seed in 0..64u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n = rng.gen_range(300..2500usize);
        let ids: Int64Array = (0..n)
            .map(|_| rng.gen_bool(0.9).then(|| rng.gen_range(-50_000..50_000i64)))
            .collect();
        let card = if rng.gen_bool(0.5) { 5 } else { 100_000 };
        let names: StringArray = (0..n)
            .map(|_| {
                rng.gen_bool(0.85)
                    .then(|| format!("n{}", rng.gen_range(0..card)))
            })
            .collect();
        let lists: Vec<Option<Vec<Option<i32>>>> = (0..n)
            .map(|_| {
                rng.gen_bool(0.8).then(|| {
                    let len = rng.gen_range(0..4);
                    (0..len)
                        .map(|_| rng.gen_bool(0.9).then(|| rng.gen_range(0..1000)))
                        .collect()
                })
            })
            .collect();
        let tags = ListArray::from_iter_primitive::<arrow::datatypes::Int32Type, _, _>(lists);
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]);
        let inner = StructArray::new(
            fields,
            vec![
                Arc::new(Int64Array::from_iter((0..n).map(|i| Some(i as i64 * 7)))) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("b{}", i % 97)),
                )),
            ],
            Some((0..n).map(|_| rng.gen_bool(0.9)).collect::<Vec<_>>().into()),
        );
        let small = Int32Array::from_iter_values((0..n).map(|i| (i % 13) as i32));
        let batch = RecordBatch::try_from_iter(vec![
            ("id", Arc::new(ids) as ArrayRef),
            ("name", Arc::new(names)),
            ("tags", Arc::new(tags)),
            ("inner", Arc::new(inner)),
            ("small", Arc::new(small)),
        ])
        .unwrap();
        let codec = match rng.gen_range(0..5) {
            0 => Compression::UNCOMPRESSED,
            1 => Compression::SNAPPY,
            2 => Compression::ZSTD(ZstdLevel::default()),
            3 => Compression::LZ4_RAW,
            _ => Compression::GZIP(Default::default()),
        };
        let v2 = rng.gen_bool(0.5);
        let props = WriterProperties::builder()
            .set_max_row_group_row_count(Some(n))
            .set_data_page_row_count_limit(rng.gen_range(20..400))
            .set_write_batch_size(rng.gen_range(10..200))
            .set_dictionary_enabled(rng.gen_bool(0.5))
            .set_encoding(parquet::basic::Encoding::PLAIN)
            .set_writer_version(if v2 {
                WriterVersion::PARQUET_2_0
            } else {
                WriterVersion::PARQUET_1_0
            })
            .set_statistics_enabled(if rng.gen_bool(0.5) {
                EnabledStatistics::Page
            } else {
                EnabledStatistics::Chunk
            })
            .set_compression(codec)
            .build();
        let mut buf = Vec::new();
        let mut w = ArrowWriter::try_new(&mut buf, batch.schema(), Some(props)).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let buf = Bytes::from(buf);
        let share = [0.001, 0.01, 0.05][rng.gen_range(0..3)];
        let mut erased: Vec<u32> = (0..n as u32).filter(|_| rng.gen_bool(share)).collect();
        if rng.gen_bool(0.3) {
            erased.insert(0, 0);
            erased.dedup();
        }
        if erased.is_empty() {
            erased.push(rng.gen_range(0..n as u32));
        }
        let out = rewrite(buf.clone(), &[erased.clone()], &Mode::Delete, "mem").unwrap();
        spliced_total += out.chunks_spliced;
        let keep: BooleanArray = (0..n as u32)
            .map(|i| Some(erased.binary_search(&i).is_err()))
            .collect();
        let expected = arrow::compute::filter_record_batch(&batch, &keep).unwrap();
        let new = out.bytes.unwrap();
        assert_eq!(read(new.clone()), expected, "seed {seed}");
        let name = format!("seed{seed}");
        read_back.push(write_pair(dir.path(), &name, &buf, &new, &keep));
        // The id column's chunk statistics are those of the kept values.
        let meta = parquet::file::serialized_reader::SerializedFileReader::new(new).unwrap();
        use parquet::file::reader::FileReader;
        let stats = meta.metadata().row_group(0).column(0).statistics().cloned();
        let kept_ids = expected.column(0).as_primitive::<Int64Type>();
        if let Some(parquet::file::statistics::Statistics::Int64(s)) = stats {
            assert_eq!(
                s.min_opt().copied(),
                arrow::compute::min(kept_ids),
                "seed {seed}"
            );
            assert_eq!(
                s.max_opt().copied(),
                arrow::compute::max(kept_ids),
                "seed {seed}"
            );
            assert_eq!(
                s.null_count_opt(),
                Some(kept_ids.null_count() as u64),
                "seed {seed}"
            );
        }
    }
    assert!(
        spliced_total > 24,
        "page surgery ran on {spliced_total} chunks"
    );
    // Every reader reads each result as the original's kept rows (with read_dictionary on the
    // names: pyarrow misreads a dictionary that holds a value twice).
    assert_eq!(assert_read_back(&read_back), 64 * 5);
}
