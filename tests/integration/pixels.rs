//! `pixels`: the pixel codes of a framed plane stream equal iscc-core's wide ISCC-SUM of the
//! same bytes (and iscc-sum's), simprints equal each plane's Data-Code, and a fault in one
//! image's frames costs only that image.

use crate::harness::*;
use omero_iscc::records::pixels::PixelLine;
use omero_iscc::records::similar::SimilarKind;
use std::fs;
use std::path::Path;

/// One image: id, plane count, plane bytes, and its canonical stream.
struct Image {
    id: &'static str,
    planes: usize,
    plane_bytes: usize,
    data: Vec<u8>,
}

fn image(id: &'static str, planes: usize, plane_bytes: usize, seed: u64) -> Image {
    Image { id, planes, plane_bytes, data: pseudo_random(planes * plane_bytes, seed) }
}

/// The frames of `image`, its bytes sent in `bytes` frames of `piece` bytes.
fn frames(image: &Image, piece: usize) -> Vec<u8> {
    let mut out = format!(
        "{{\"image\": \"{}\", \"planes\": {}, \"plane_bytes\": {}}}\n",
        image.id, image.planes, image.plane_bytes
    )
    .into_bytes();
    for part in image.data.chunks(piece) {
        out.extend_from_slice(format!("{{\"bytes\": {}}}\n", part.len()).as_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"{\"end\": true}\n");
    out
}

fn records(out: &std::process::Output) -> Vec<PixelLine> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a pixel record ({e}): {l}")))
        .collect()
}

/// Asserts `got` is `image`'s code as iscc-core computes it, plane simprints included.
fn assert_reference(dir: &Path, image: &Image, got: &PixelLine) {
    let stream = dir.join(format!("{}.stream", image.id));
    fs::write(&stream, &image.data).unwrap();
    let mut args = vec![stream.to_string_lossy().into_owned()];
    for (n, plane) in image.data.chunks(image.plane_bytes).enumerate() {
        let path = dir.join(format!("{}.plane{n}", image.id));
        fs::write(&path, plane).unwrap();
        args.push(path.to_string_lossy().into_owned());
    }
    let reference = iscc_core(dir, &args);
    assert_eq!(got.error, None, "{}", image.id);
    assert_eq!(got.iscc.as_deref(), reference[0]["wide"].as_str(), "{}", image.id);
    assert_eq!(got.units.as_ref().unwrap()[0], reference[0]["units"][0].as_str().unwrap());
    assert_eq!(got.units.as_ref().unwrap()[1], reference[0]["units"][1].as_str().unwrap());
    assert_eq!(got.datahash.as_deref(), reference[0]["datahash"].as_str());
    assert_eq!(got.size, Some(image.data.len() as u64));
    assert_eq!(got.planes, image.planes as u64);
    let simprints = got.simprints.as_ref().expect("asked for simprints");
    assert_eq!(simprints.len(), image.planes);
    for (n, s) in simprints.iter().enumerate() {
        assert_eq!(s.simprint, reference[n + 1]["data_b64"].as_str().unwrap(), "{} plane {n}", image.id);
        assert_eq!((s.offset, s.size), (n as u64, image.plane_bytes as u64));
    }
}

#[test]
fn a_batch_of_images_gets_the_reference_codes_whatever_the_framing() {
    let dir = tempfile::tempdir().unwrap();
    let images = [
        image("tiny", 1, 1, 1),
        image("odd", 3, 70_001, 2),
        image("large", 2, 6 << 20, 3), // planes larger than a piece, on several threads
        image("many", 40, 257, 4),
    ];
    for (piece, threads) in [(1 << 30, "2"), (4093, "1"), (70_001, "2")] {
        let mut input = Vec::new();
        for im in &images {
            input.extend(frames(im, piece));
        }
        let out = run_in(dir.path(), &["pixels", "--simprints", "--threads", threads], &input);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let got = records(&out);
        assert_eq!(got.len(), images.len());
        for (im, record) in images.iter().zip(&got) {
            assert_eq!(record.image, serde_json::json!(im.id));
            assert_reference(dir.path(), im, record);
        }
    }
}

#[test]
fn the_code_is_iscc_sums_wide_code_of_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let im = image("x", 4, 100_000, 9);
    fs::write(dir.path().join("x.stream"), &im.data).unwrap();
    let reference = stdout(&iscc_sum(dir.path(), &["x.stream"]));
    let out = run_in(dir.path(), &["pixels"], &frames(&im, 65536));
    let got = records(&out);
    assert_eq!(reference.split(" *").next(), got[0].iscc.as_deref());
    assert!(got[0].simprints.is_none(), "simprints only on request");
}

#[test]
fn a_fault_in_one_image_costs_only_that_image() {
    let dir = tempfile::tempdir().unwrap();
    let good = image("good", 2, 1000, 5);
    let good_frames = frames(&good, 300);
    let mut input = Vec::new();
    // Fewer bytes than declared, then its end frame.
    input.extend_from_slice(b"{\"image\": 1, \"planes\": 3, \"plane_bytes\": 10}\n{\"bytes\": 20}\n");
    input.extend_from_slice(&[7u8; 20]);
    input.extend_from_slice(b"{\"end\": true}\n");
    input.extend(&good_frames);
    // More bytes than declared.
    input.extend_from_slice(b"{\"image\": 2, \"planes\": 1, \"plane_bytes\": 10}\n{\"bytes\": 11}\n");
    input.extend_from_slice(&[1u8; 11]);
    input.extend_from_slice(b"{\"end\": true}\n");
    // No end frame before the next image.
    input.extend_from_slice(b"{\"image\": 3, \"planes\": 1, \"plane_bytes\": 4}\n{\"bytes\": 4}\nabcd");
    input.extend(&good_frames);
    // Garbage inside an image, then its (skipped) frames.
    input.extend_from_slice(b"{\"image\": 4, \"planes\": 1, \"plane_bytes\": 4}\n\x00\x01garbage\n{\"bytes\": 4}\nabcd{\"end\": true}\n");
    // The producer gives up.
    input.extend_from_slice(b"{\"image\": 5, \"planes\": 2, \"plane_bytes\": 4}\n{\"bytes\": 4}\nabcd{\"abort\": \"getPlane failed\"}\n");
    input.extend(&good_frames);
    // Cut off inside a bytes frame.
    input.extend_from_slice(b"{\"image\": 6, \"planes\": 2, \"plane_bytes\": 4}\n{\"bytes\": 8}\nabc");
    let out = run_in(dir.path(), &["pixels", "--simprints"], &input);
    assert_eq!(out.status.code(), Some(1), "failures give status 1");
    let got = records(&out);
    let ids: Vec<String> = got.iter().map(|r| r.image.to_string()).collect();
    assert_eq!(ids, ["1", "\"good\"", "2", "3", "\"good\"", "4", "5", "\"good\"", "6"]);
    let message = |n: usize| got[n].error.as_ref().map(|e| e.message.clone()).unwrap_or_default();
    assert_eq!(message(0), "the end frame came early: 2 of 3 planes (20 of 30 bytes)");
    assert_eq!(got[0].planes, 2);
    assert_eq!(message(2), "more pixel bytes than declared: 1 planes of 10 bytes");
    assert_eq!(message(3), "the next image began before this one's end frame: 1 of 1 planes (4 of 4 bytes)");
    assert!(message(5).starts_with("not a frame: "), "{}", message(5));
    assert_eq!(message(6), "the producer gave the image up: getPlane failed");
    assert_eq!(message(8), "the stream ended 5 byte(s) short of a bytes frame");
    for n in [1, 4, 7] {
        assert_reference(dir.path(), &good, &got[n]);
    }
}

#[test]
fn memory_stays_bounded_for_an_image_larger_than_memory_would_allow() {
    // 1 GiB of planes through a pipe: resident memory must stay a few pieces, not the image.
    let dir = tempfile::tempdir().unwrap();
    let plane = 64usize << 20;
    let planes = 16;
    let mut child = bin()
        .args(["pixels"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let data = pseudo_random(plane, 11);
        writeln!(stdin, "{{\"image\": 1, \"planes\": {planes}, \"plane_bytes\": {plane}}}").unwrap();
        for _ in 0..planes {
            writeln!(stdin, "{{\"bytes\": {plane}}}").unwrap();
            stdin.write_all(&data).unwrap();
        }
        stdin.write_all(b"{\"end\": true}\n").unwrap();
    });
    let pid = child.id();
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) {
            for line in status.lines().filter(|l| l.starts_with("VmHWM:")) {
                peak_kib = peak_kib.max(line.split_whitespace().nth(1).unwrap().parse().unwrap());
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let got = records(&out);
    assert_eq!(got[0].size, Some((plane * planes) as u64));
    assert!(peak_kib > 0 && peak_kib < 96 * 1024, "peak resident {peak_kib} KiB for a 1 GiB image");
}

#[test]
fn similar_groups_pixel_records_by_their_image_ids() {
    let dir = tempfile::tempdir().unwrap();
    let a = image("a", 2, 50_000, 21);
    let same = Image { id: "b", planes: 2, plane_bytes: 50_000, data: a.data.clone() };
    let mut near = Image { id: "c", planes: 2, plane_bytes: 50_000, data: a.data.clone() };
    near.data[70_000..70_100].fill(0);
    let other = image("d", 2, 50_000, 22);
    let mut input = Vec::new();
    for im in [&a, &same, &near, &other] {
        input.extend(frames(im, 65536));
    }
    let out = run_in(dir.path(), &["pixels"], &input);
    let grouped = run_in(dir.path(), &["similar", "--json"], &out.stdout);
    assert_eq!(grouped.status.code(), Some(0), "{}", stderr(&grouped));
    let groups = similar_lines(&grouped);
    let members = |n: usize| -> Vec<String> {
        groups[n].members.iter().map(|m| String::from_utf8(m.id.clone().unwrap().0).unwrap()).collect()
    };
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!((groups[0].kind, members(0)), (SimilarKind::Identical, vec!["a".into(), "b".into()]));
    assert_eq!(groups[1].kind, SimilarKind::Similar);
    assert!(members(1).contains(&"c".to_string()) && !members(1).contains(&"d".to_string()));
}
