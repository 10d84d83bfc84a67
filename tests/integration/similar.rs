//! `similar`: identical and near-identical groups, exactly the pairs brute force finds.

use crate::harness::{self, *};
use iscc_lib::codec::{encode_component, MainType, SubType, Version};
use omero_iscc::pathcodec::PathText;
use omero_iscc::records::similar::{Member, SimilarKind, SimilarLine};
use omero_iscc::records::sum::{FileLine, Line};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;

fn sum_code(data: [u8; 32], instance: [u8; 32], wide: bool) -> String {
    let d =
        format!("ISCC:{}", encode_component(MainType::Data, SubType::None, Version::V0, 256, &data).unwrap());
    let i = format!(
        "ISCC:{}",
        encode_component(MainType::Instance, SubType::None, Version::V0, 256, &instance).unwrap()
    );
    iscc_lib::gen_iscc_code_v0(&[&d, &i], wide).unwrap().iscc
}

/// `n` random codes, a third of them near copies (0 to 16 bits flipped) of an earlier one.
fn planted(n: usize, wide: bool) -> (Vec<String>, Vec<u128>) {
    let bytes = pseudo_random(n * 64, 77);
    let mut codes = Vec::new();
    let mut datas: Vec<[u8; 32]> = Vec::new();
    for k in 0..n {
        let mut data: [u8; 32] = bytes[k * 64..k * 64 + 32].try_into().unwrap();
        let instance: [u8; 32] = bytes[k * 64 + 32..k * 64 + 64].try_into().unwrap();
        if k % 3 == 2 {
            let source = datas[((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 33) as usize % k];
            data = source;
            let flips = (k / 3) % 17;
            let width = if wide { 128 } else { 64 };
            for f in 0..flips {
                let bit = (k * 31 + f * 13) % width;
                data[bit / 8] ^= 0x80 >> (bit % 8);
            }
        }
        datas.push(data);
        codes.push(sum_code(data, instance, wide));
    }
    let bits = datas
        .iter()
        .map(|d| {
            let v = u128::from_be_bytes(d[..16].try_into().unwrap());
            if wide {
                v
            } else {
                v & (u128::MAX << 64)
            }
        })
        .collect();
    (codes, bits)
}

fn brute_force_components(bits: &[u128], threshold: u32) -> BTreeSet<Vec<usize>> {
    let mut parent: Vec<usize> = (0..bits.len()).collect();
    fn root(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            x = p[x];
        }
        x
    }
    for i in 0..bits.len() {
        for j in i + 1..bits.len() {
            if (bits[i] ^ bits[j]).count_ones() <= threshold {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups = std::collections::BTreeMap::<usize, Vec<usize>>::new();
    for i in 0..bits.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

fn groups_of(out: &std::process::Output, kind: SimilarKind) -> BTreeSet<Vec<usize>> {
    similar_lines(out)
        .iter()
        .filter(|g| g.kind == kind)
        .map(|g| {
            g.members
                .iter()
                .map(|m| {
                    assert_eq!((&m.path, m.iscc.starts_with("ISCC:")), (&None, true), "{m:?}");
                    std::str::from_utf8(m.id.as_ref().unwrap().as_bytes()).unwrap().parse().unwrap()
                })
                .collect()
        })
        .collect()
}

#[test]
fn near_groups_equal_brute_force_on_20000_codes() {
    for (wide, threshold) in [(false, 12u32), (true, 12), (false, 5)] {
        let (codes, bits) = planted(20_000, wide);
        let input: String =
            codes.iter().enumerate().map(|(i, c)| format!("{{\"id\":\"{i}\",\"iscc\":\"{c}\"}}\n")).collect();
        let tree = Tree::new();
        tree.file("codes.jsonl", &input);
        let t = threshold.to_string();
        let out = tree.run(&["similar", "--json", "--threshold", &t, "codes.jsonl"], b"", 0);
        let scaled = if wide { threshold * 2 } else { threshold };
        let want = brute_force_components(&bits, scaled);
        assert!(want.len() > 1000, "the planted pairs must give many groups ({})", want.len());
        assert_eq!(groups_of(&out, SimilarKind::Similar), want, "wide={wide} threshold={threshold}");
        assert!(groups_of(&out, SimilarKind::Identical).is_empty());
    }
}

/// Copies of one Data-Code (a blank file imported many times, narrow and wide codes of it) are
/// one group, found without pairing every copy with every other: all pairs of 40,000 copies
/// would take about 6 GB, and the run is held to 1 GiB of address space.
#[test]
fn many_copies_of_one_data_code_are_one_group_in_bounded_memory() {
    let n = 40_000;
    let bytes = pseudo_random(n * 32, 91);
    let input: String = (0..n)
        .map(|k| {
            let instance: [u8; 32] = bytes[k * 32..k * 32 + 32].try_into().unwrap();
            let code = sum_code([7u8; 32], instance, k % 4 == 3);
            format!("{{\"id\":\"{k}\",\"iscc\":\"{code}\"}}\n")
        })
        .collect();
    let tree = Tree::new();
    tree.file("codes.jsonl", &input);
    let out = std::process::Command::new("prlimit")
        .args(["--as=1073741824", "--", env!("CARGO_BIN_EXE_omero-iscc"), "similar", "--json", "codes.jsonl"])
        .current_dir(tree.path())
        .output()
        .expect("prlimit (util-linux) runs the binary");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(groups_of(&out, SimilarKind::Similar), BTreeSet::from([(0..n).collect::<Vec<usize>>()]));
}

/// A narrow code joins each wide code whose first 64 bits are within the threshold, also wide
/// codes far apart over 128 bits, which are then one group through it alone.
#[test]
fn a_narrow_code_joins_each_wide_code_of_its_64_bit_class() {
    let mut far = [7u8; 32];
    far[8..16].iter_mut().for_each(|b| *b ^= 0xFF); // 64 bits apart, all in the second half
    let codes = [
        sum_code([7u8; 32], [1u8; 32], true),
        sum_code(far, [2u8; 32], true),
        sum_code([7u8; 32], [3u8; 32], false),
        sum_code([0x55u8; 32], [4u8; 32], true),
    ];
    let input: String =
        codes.iter().enumerate().map(|(i, c)| format!("{{\"id\":\"{i}\",\"iscc\":\"{c}\"}}\n")).collect();
    let tree = Tree::new();
    tree.file("codes.jsonl", &input);
    let out = tree.run(&["similar", "--json", "codes.jsonl"], b"", 0);
    assert_eq!(groups_of(&out, SimilarKind::Similar), BTreeSet::from([vec![0, 1, 2]]));
}

/// Components of the pairs the code index's rule joins: two wide codes within `2 × threshold`
/// over 128 bits, any other two within `threshold` over their first 64 bits.
fn brute_force_pairwise(bits: &[u128], wide: &[bool], threshold: u32) -> BTreeSet<Vec<usize>> {
    let mut parent: Vec<usize> = (0..bits.len()).collect();
    fn root(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            x = p[x];
        }
        x
    }
    for i in 0..bits.len() {
        for j in i + 1..bits.len() {
            let near = if wide[i] && wide[j] {
                (bits[i] ^ bits[j]).count_ones() <= 2 * threshold
            } else {
                ((bits[i] ^ bits[j]) >> 64).count_ones() <= threshold
            };
            if near {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    let mut groups = std::collections::BTreeMap::<usize, Vec<usize>>::new();
    for i in 0..bits.len() {
        let r = root(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

#[test]
fn a_mix_of_narrow_and_wide_codes_is_compared_pair_by_pair() {
    // Wide codes with planted near copies (up to 16 of 128 bits flipped, in either half);
    // every fifth is given as the narrow code of the same digests. A wide pair is joined
    // within 24 bits over 128 whatever else the input holds; a pair with a narrow code within
    // 12 bits over the first 64.
    let threshold = 12;
    let (wide_codes, bits) = planted(6_000, true);
    let wide: Vec<bool> = (0..wide_codes.len()).map(|i| i % 5 != 0).collect();
    let bytes = pseudo_random(6_000 * 64, 77);
    let codes: Vec<String> = wide_codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            if wide[i] {
                return code.clone();
            }
            let instance: [u8; 32] = bytes[i * 64 + 32..i * 64 + 64].try_into().unwrap();
            let mut data = [0u8; 32];
            data[..16].copy_from_slice(&bits[i].to_be_bytes());
            sum_code(data, instance, false)
        })
        .collect();
    let input: String =
        codes.iter().enumerate().map(|(i, c)| format!("{{\"id\":\"{i}\",\"iscc\":\"{c}\"}}\n")).collect();
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("codes.jsonl"), &input).unwrap();
    let out = run_in(tmp.path(), &["similar", "--json", "--threshold", "12", "codes.jsonl"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let want = brute_force_pairwise(&bits, &wide, threshold);
    let set_rule =
        brute_force_components(&bits.iter().map(|b| b & (u128::MAX << 64)).collect::<Vec<_>>(), 12);
    assert_ne!(want, set_rule, "the input must tell the pairwise rule from comparing everything at 64 bits");
    assert!(want.len() > 300, "the planted pairs must give many groups ({})", want.len());
    assert_eq!(groups_of(&out, SimilarKind::Similar), want);
}

#[test]
fn real_files_copied_edited_and_extended() {
    let samples = samples();
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let original = fs::read(samples.join("ome-tiff/neuron-4Ch.tiff")).unwrap();
    fs::write(d.join("a-original.tiff"), &original).unwrap();
    fs::write(d.join("b-copy.tiff"), &original).unwrap();
    let mut edited = original.clone();
    let mid = edited.len() / 2;
    for b in &mut edited[mid..mid + 64] {
        *b ^= 0x5A;
    }
    fs::write(d.join("c-edited.tiff"), &edited).unwrap();
    let mut extended = original.clone();
    extended.extend_from_slice(&pseudo_random(40_000, 1));
    fs::write(d.join("d-extended.tiff"), &extended).unwrap();
    fs::copy(samples.join("ome-tiff/neocortex-3Ch.tiff"), d.join("e-other.tiff")).unwrap();
    let sums = run_in(d, &["sum", "--json", "."], b"");
    fs::write(d.join("sums.jsonl"), &sums.stdout).unwrap();
    let iscc_of: BTreeMap<Vec<u8>, String> = sum_lines(&sums)
        .into_iter()
        .map(|line| match line {
            Line::File(FileLine { path, iscc: Some(iscc), .. }) => (path.0, iscc),
            other => panic!("not a file's code: {other:?}"),
        })
        .collect();
    let out = run_in(d, &["similar", "--json", "sums.jsonl"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Distances are the Data-Code Hamming distances of iscc-core's codes.
    let reference = iscc_core(d, &["a-original.tiff", "c-edited.tiff", "d-extended.tiff"]);
    let data_bits = |r: &serde_json::Value| {
        let data = omero_iscc::engine::codes::decode_sum(r["narrow"].as_str().unwrap()).unwrap().data;
        data
    };
    let distance =
        |want: &serde_json::Value| ((data_bits(&reference[0]) ^ data_bits(want)) >> 64).count_ones();
    let (edited, extended) = (distance(&reference[1]), distance(&reference[2]));
    assert!(edited <= 12 && extended <= 12, "{edited} {extended}");
    let member = |name: &str, distance| Member {
        id: None,
        path: Some(PathText(name.as_bytes().to_vec())),
        iscc: iscc_of[name.as_bytes()].clone(),
        distance,
    };
    let identical = vec![member("./a-original.tiff", 0), member("./b-copy.tiff", 0)];
    let mut similar = identical.clone();
    similar.extend([member("./c-edited.tiff", edited), member("./d-extended.tiff", extended)]);
    assert_eq!(
        similar_lines(&out),
        [
            SimilarLine { kind: SimilarKind::Identical, members: identical },
            SimilarLine { kind: SimilarKind::Similar, members: similar },
        ],
        "{}",
        stdout(&out)
    );
}

#[test]
fn malformed_lines_are_reported_with_their_numbers_and_skipped() {
    let tree = Tree::new();
    let code = sum_code([1; 32], [2; 32], false);
    let input = format!(
        "{{\"id\":\"1\",\"iscc\":\"{code}\"}}\nnonsense\n{{\"id\":\"2\",\"iscc\":\"ISCC:NOTACODE\"}}\n{code} *file-b\n{{\"path\":\"x\",\"error\":{{\"kind\":\"io\",\"message\":\"m\"}}}}\n"
    );
    let out = tree.run(&["similar"], input.as_bytes(), 1);
    let err = stderr(&out);
    for line in [2, 3, 5] {
        assert!(err.contains(&format!("line {line}:")), "{err}");
    }
    assert!(stdout(&out).starts_with("# identical: 2 members\n"), "{}", stdout(&out));
}

#[test]
fn units_lines_and_a_mix_of_text_and_json_records_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("a"), harness::pseudo_random(50_000, 1)).unwrap();
    fs::copy(d.join("a"), d.join("a-copy")).unwrap();
    fs::write(d.join("other"), harness::pseudo_random(50_000, 2)).unwrap();
    let mut input = Vec::new();
    for args in [
        &["sum", "--units", "a", "other"][..], // narrow text with unit lines
        &["sum", "--wide", "--units", "a-copy"][..], // wide text
        &["sum", "--json", "--units", "a"][..], // JSON with datahash and units
    ] {
        let out = harness::run_in(d, args, b"");
        assert!(out.status.success());
        input.extend_from_slice(&out.stdout);
    }
    let out = harness::run_in(d, &["similar", "--json", "--exact", "-"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", harness::stderr(&out));
    assert!(!harness::stderr(&out).contains("malformed"), "{}", harness::stderr(&out));
    let groups = harness::similar_lines(&out);
    assert_eq!(groups.len(), 1, "{}", harness::stdout(&out));
    assert_eq!(groups[0].kind, SimilarKind::Identical);
    let names: Vec<&[u8]> = groups[0].members.iter().map(|m| m.path.as_ref().unwrap().as_bytes()).collect();
    assert_eq!(names, [&b"a"[..], b"a-copy", b"a"]);
}
