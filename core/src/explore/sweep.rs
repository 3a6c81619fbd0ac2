//! Running a design space: every point of a shard priced in parallel, rows streamed to CSV in
//! index order.
//!
//! Crash safety: rows are written a chunk at a time as whole lines, so an interrupted sweep leaves
//! complete rows followed at most by one partial line. `--resume` drops that partial line and
//! continues with the next point, so a resumed sweep writes exactly the file an uninterrupted one
//! would. A shard `i/N` takes the points whose index is `i` modulo `N`; merging shards sorts their
//! rows by index, which gives the unsharded file.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::pareto;
use super::space::{DesignSpace, Point, parse_bits};
use crate::accel::{AccelConfig, Workload, totals};
use crate::arch::ArchSpec;
use crate::error::{Error, Result};
use crate::graph::Graph;

/// Columns of a sweep CSV.
pub const HEADER: [&str; 20] = [
    "index",
    "model",
    "resolution",
    "mat_pes",
    "mat_lanes",
    "rmac_pes",
    "rmac_lanes",
    "copies",
    "clock_mhz",
    "bits",
    "multipliers",
    "dsps",
    "cycles",
    "fps",
    "gops",
    "gops_per_dsp",
    "fps_per_dsp",
    "utilization",
    "top1",
    "status",
];

/// Column positions used by the Pareto front.
const FPS: usize = 13;
const GOPS_PER_DSP: usize = 15;
const TOP1: usize = 18;
const STATUS: usize = 19;

/// Points per parallel chunk (and per write).
const CHUNK: usize = 4096;

/// Which part of the space this run covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `i/N`, e.g. `0/4`.
    pub fn parse(text: &str) -> std::result::Result<Shard, String> {
        let err = || format!("`{text}` is not a shard i/N with 0 ≤ i < N (e.g. 0/4)");
        let (i, n) = text.split_once('/').ok_or_else(err)?;
        let (index, count) = (i.parse().map_err(|_| err())?, n.parse().map_err(|_| err())?);
        if count == 0 || index >= count {
            return Err(err());
        }
        Ok(Shard { index, count })
    }

    /// Points of a space of `len` points in this shard.
    pub fn len(&self, len: u64) -> u64 {
        len.saturating_sub(self.index).div_ceil(self.count)
    }

    pub fn is_empty(&self, len: u64) -> bool {
        self.len(len) == 0
    }

    /// The `k`-th index of this shard.
    pub fn nth(&self, k: u64) -> u64 {
        self.index + k * self.count
    }
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Points in this shard.
    pub points: u64,
    /// Rows already in the file when resuming.
    pub resumed: u64,
    /// Points priced by this run.
    pub evaluated: u64,
    /// The run stopped early because it was asked to; the file holds whole rows and can be
    /// resumed.
    pub cancelled: bool,
    /// When resuming found a row that is not what this sweep writes there: which and why. The
    /// file was cut before it and the run went on from there.
    pub repaired: Option<String>,
}

/// Everything a point needs, prepared once per run.
struct Prepared<'s> {
    space: &'s DesignSpace,
    base: AccelConfig,
    /// (model, resolution axis index, bits axis index) → workload, or why the model cannot run.
    workloads: HashMap<(usize, usize, usize), std::result::Result<Workload, String>>,
    /// (model, bits axis index) → top-1 %, when the space asks for accuracy.
    top1: HashMap<(usize, usize), f64>,
}

impl<'s> Prepared<'s> {
    fn new(
        space: &'s DesignSpace,
        cancel: &AtomicBool,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Self> {
        let base = match &space.base_config {
            Some(config) => config.clone(),
            None => AccelConfig::resolve(&space.base)?,
        };
        if base.engines().is_none() {
            return Error::field(
                &base.name,
                "architecture",
                "a sweep varies Trio-ViT engine sizes (mat/rmac); use a Trio-ViT accelerator as its base",
            );
        }
        let mut workloads = HashMap::new();
        for (m, model) in space.models.iter().enumerate() {
            let spec = ArchSpec::resolve(model)?;
            for r in 0..space.resolutions.len().max(1) {
                let graph = match space.resolutions.get(r) {
                    Some(&res) => spec.with_resolution(res).and_then(|s| Graph::build(&s)),
                    None => Graph::build(&spec),
                };
                for (b, bits) in space.bits.iter().enumerate() {
                    let (w, a) =
                        parse_bits(bits).or_else(|m| Error::field(&space.name, "bits", m))?;
                    let workload = graph
                        .as_ref()
                        .map(|g| Workload::uniform(g, w, a))
                        .map_err(|e| e.to_string());
                    workloads.insert((m, r, b), workload);
                }
            }
        }
        let top1 = match &space.accuracy {
            Some(spec) => super::accuracy::top1_table_until(
                spec,
                &space.models,
                &space.bits,
                &space.name,
                cancel,
                &mut |a| progress(Progress::Accuracy(a.clone())),
            )?,
            None => HashMap::new(),
        };
        Ok(Self {
            space,
            base,
            workloads,
            top1,
        })
    }

    /// The CSV fields of one point.
    fn row(&self, p: &Point) -> Vec<String> {
        let s = self.space;
        let mut config = self.base.clone();
        let engines = [
            s.mat_pes[p.mat_pes],
            s.mat_lanes[p.mat_lanes],
            s.rmac_pes[p.rmac_pes],
            s.rmac_lanes[p.rmac_lanes],
        ];
        config.set_engines(engines, s.copies[p.copies]);
        if let Some(c) = p.clock {
            config.clock_mhz = s.clock_mhz[c];
        }
        let workload = &self.workloads[&(p.model, p.resolution.unwrap_or(0), p.bits)];
        let resolution = match workload {
            Ok(w) => w.resolution.to_string(),
            Err(_) => p
                .resolution
                .map(|r| s.resolutions[r].to_string())
                .unwrap_or_default(),
        };
        let mut fields = vec![
            p.index.to_string(),
            s.models[p.model].clone(),
            resolution,
            engines[0].to_string(),
            engines[1].to_string(),
            engines[2].to_string(),
            engines[3].to_string(),
            config.copies.to_string(),
            config.clock_mhz.to_string(),
            s.bits[p.bits].clone(),
            config.multipliers().to_string(),
        ];
        match workload
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|w| totals(w, &config).map_err(|e| e.to_string()))
        {
            Ok(t) => fields.extend([
                t.dsps.to_string(),
                t.cycles.to_string(),
                format!("{:.6}", t.fps),
                format!("{:.6}", t.gops),
                format!("{:.6}", t.gops_per_dsp),
                format!("{:.8}", t.fps_per_dsp),
                format!("{:.6}", t.utilization),
                self.top1
                    .get(&(p.model, p.bits))
                    .map_or(String::new(), |a| format!("{a:.2}")),
                "ok".to_string(),
            ]),
            Err(message) => {
                fields.extend(std::iter::repeat_n(String::new(), 8));
                fields.push(message);
            }
        }
        fields
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn csv_line(fields: &[String]) -> Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields)
        .and_then(|()| w.flush().map_err(Into::into))
        .map_err(|e| Error::InvalidField {
            origin: "sweep".into(),
            field: "row".into(),
            message: e.to_string(),
        })?;
    Ok(w.into_inner().expect("flushed"))
}

/// Opens `out` to continue it, checking it is a sweep CSV; returns the file and its complete
/// rows (each line with its newline). A partial last line is left for [`keep_rows`] to cut;
/// an empty file, or one cut inside its header, starts afresh.
fn reopen(out: &Path) -> Result<(File, Vec<Vec<u8>>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .map_err(io_err(out))?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(io_err(out))?;
    let header = csv_line(&HEADER.map(String::from))?;
    if header.starts_with(&text) {
        // Killed before its header was whole (an empty file, or part of the header): start over.
        file.set_len(0).map_err(io_err(out))?;
        file.seek(SeekFrom::Start(0)).map_err(io_err(out))?;
        file.write_all(&header).map_err(io_err(out))?;
        return Ok((file, Vec::new()));
    }
    if !text.starts_with(&header) {
        return Err(Error::InvalidField {
            origin: out.display().to_string(),
            field: "header".into(),
            message: "this is not a qvit sweep CSV (the header differs); choose another --out"
                .into(),
        });
    }
    let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let rows = text[header.len()..complete]
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    Ok((file, rows))
}

/// How many of the kept `rows` are this shard's first rows, checked: each in index order and
/// parsing to a whole row, and sampled ones (the first, the last and every 64th) equal to a
/// recomputation. Returns the count to keep and, if a row was bad, what was wrong with it.
fn keep_rows(
    prepared: &Prepared<'_>,
    shard: Shard,
    rows: &[Vec<u8>],
) -> Result<(u64, Option<String>)> {
    let space = prepared.space;
    for (k, line) in rows.iter().enumerate() {
        let k = k as u64;
        let expected = shard.nth(k);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(line.as_slice());
        let record = reader.records().next().and_then(|r| r.ok());
        let why = match record {
            None => Some("does not parse as CSV".to_string()),
            Some(r) if r.len() != HEADER.len() => {
                Some(format!("has {} fields, not {}", r.len(), HEADER.len()))
            }
            Some(r) if r[0].parse::<u64>().ok() != Some(expected) || expected >= space.len() => {
                Some(format!(
                    "holds point `{}` where point {expected} belongs",
                    &r[0]
                ))
            }
            Some(_) if k.is_multiple_of(64) || k + 1 == rows.len() as u64 => {
                let fresh = csv_line(&prepared.row(&space.point(expected)))?;
                (fresh != *line).then(|| "differs from the same point priced again".to_string())
            }
            Some(_) => None,
        };
        if let Some(why) = why {
            return Ok((k, Some(format!("row {} {why}", k + 1))));
        }
    }
    Ok((rows.len() as u64, None))
}

/// How far a sweep is: its accuracy phase (once per model and bit width, before any design is
/// priced), then the rows in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    Accuracy(super::accuracy::AccuracyProgress),
    Designs(u64),
}

/// Prices this shard's points of `space` and writes them to `out` (with `resume`, after the
/// rows already there). `progress(done)` is called after each chunk with the rows in the file.
pub fn run(
    space: &DesignSpace,
    out: &Path,
    shard: Shard,
    resume: bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Outcome> {
    let never = AtomicBool::new(false);
    run_until(space, out, shard, resume, &never, &mut |p| {
        if let Progress::Designs(done) = p {
            progress(done)
        }
    })
}

/// [`run`], reporting the accuracy phase too, and stopping after the chunk during which
/// `cancel` becomes true (for a UI's cancel button; a cancelled accuracy phase is an error). A
/// cancelled file holds whole rows only, so `resume` continues it.
pub fn run_until(
    space: &DesignSpace,
    out: &Path,
    shard: Shard,
    resume: bool,
    cancel: &AtomicBool,
    progress: &mut dyn FnMut(Progress),
) -> Result<Outcome> {
    let prepared = Prepared::new(space, cancel, progress)?;
    let points = shard.len(space.len());
    let started = out.metadata().is_ok_and(|m| m.len() > 0);
    let (mut file, kept) = if out.exists() {
        if !resume && started {
            return Err(Error::InvalidField {
                origin: out.display().to_string(),
                field: "--out".into(),
                message: "the file exists; pass --resume to continue it, or choose another path"
                    .into(),
            });
        }
        reopen(out)?
    } else {
        let mut f = File::create(out).map_err(io_err(out))?;
        f.write_all(&csv_line(&HEADER.map(String::from))?)
            .map_err(io_err(out))?;
        (f, Vec::new())
    };
    if kept.len() as u64 > points {
        return Err(Error::InvalidField {
            origin: out.display().to_string(),
            field: "rows".into(),
            message: format!(
                "holds {} rows but this shard has {points} points; is it another sweep's file?",
                kept.len()
            ),
        });
    }
    let (resumed, repaired) = keep_rows(&prepared, shard, &kept)?;
    if !kept.is_empty() {
        // Cut after the rows kept: a partial last line, or everything from a bad row on.
        let header = csv_line(&HEADER.map(String::from))?.len();
        let keep: usize = kept[..resumed as usize].iter().map(Vec::len).sum();
        file.set_len((header + keep) as u64).map_err(io_err(out))?;
        file.seek(SeekFrom::End(0)).map_err(io_err(out))?;
    }
    let mut done = resumed;
    progress(Progress::Designs(done));
    while done < points && !cancel.load(Ordering::Relaxed) {
        let end = (done + CHUNK as u64).min(points);
        let lines: Vec<Vec<u8>> = (done..end)
            .into_par_iter()
            .map(|k| csv_line(&prepared.row(&space.point(shard.nth(k)))))
            .collect::<Result<_>>()?;
        file.write_all(&lines.concat()).map_err(io_err(out))?;
        file.flush().map_err(io_err(out))?;
        done = end;
        progress(Progress::Designs(done));
    }
    file.sync_all().map_err(io_err(out))?;
    Ok(Outcome {
        points,
        resumed,
        evaluated: done - resumed,
        cancelled: done < points,
        repaired,
    })
}

fn read_rows(path: &Path) -> Result<Vec<csv::StringRecord>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| Error::InvalidField {
        origin: path.display().to_string(),
        field: "csv".into(),
        message: e.to_string(),
    })?;
    let header = reader
        .headers()
        .map(|h| h.iter().eq(HEADER))
        .unwrap_or(false);
    if !header {
        return Err(Error::InvalidField {
            origin: path.display().to_string(),
            field: "header".into(),
            message: "this is not a qvit sweep CSV".into(),
        });
    }
    let origin = path.display().to_string();
    reader
        .records()
        .map(|r| {
            let r = r.map_err(|e| Error::InvalidField {
                origin: origin.clone(),
                field: "row".into(),
                message: e.to_string(),
            })?;
            check_row(&r, &origin)?;
            Ok(r)
        })
        .collect()
}

/// A finite number in field `i` of a row, or an error naming the row and the column.
fn number(r: &csv::StringRecord, i: usize, origin: &str) -> Result<f64> {
    match r[i].parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Error::field(
            origin,
            HEADER[i],
            format!("row `{}`: `{}` is not a finite number", &r[0], &r[i]),
        ),
    }
}

/// Refuses a row whose index is not a whole number, or a feasible row whose objectives are
/// not finite numbers: what a merge sorts by and a Pareto front compares.
fn check_row(r: &csv::StringRecord, origin: &str) -> Result<()> {
    if r[0].parse::<u64>().is_err() {
        return Error::field(
            origin,
            HEADER[0],
            format!("`{}` is not a point index", &r[0]),
        );
    }
    if &r[STATUS] == "ok" {
        number(r, FPS, origin)?;
        number(r, GOPS_PER_DSP, origin)?;
        if !r[TOP1].is_empty() {
            number(r, TOP1, origin)?;
        }
    }
    Ok(())
}

fn write_rows(path: &Path, rows: &[csv::StringRecord]) -> Result<()> {
    let mut bytes = csv_line(&HEADER.map(String::from))?;
    for r in rows {
        bytes.extend(csv_line(&r.iter().map(String::from).collect::<Vec<_>>())?);
    }
    crate::ron_io::write_atomic(path, &bytes)
}

/// Joins shard files into one, rows in index order. An index present twice is an error, and so
/// is a gap in the indices (a shard's file left out: shards take every N-th point, so each one
/// missing leaves gaps) unless `partial` accepts what is there.
pub fn merge(inputs: &[PathBuf], out: &Path, partial: bool) -> Result<u64> {
    // Every row's index was checked by `read_rows`.
    let index = |r: &csv::StringRecord| r[0].parse::<u64>().unwrap_or_default();
    let mut tagged: Vec<(u64, usize, csv::StringRecord)> = Vec::new();
    for (file, input) in inputs.iter().enumerate() {
        tagged.extend(read_rows(input)?.into_iter().map(|r| (index(&r), file, r)));
    }
    tagged.sort_by_key(|(i, file, _)| (*i, *file));
    if let Some(w) = tagged.windows(2).find(|w| w[0].0 == w[1].0) {
        let (a, b) = (&inputs[w[0].1], &inputs[w[1].1]);
        return Err(Error::InvalidField {
            origin: a.display().to_string(),
            field: "index".into(),
            message: format!(
                "point {} is also in {}; were the shards run twice?",
                w[0].0,
                b.display()
            ),
        });
    }
    let rows: Vec<csv::StringRecord> = tagged.into_iter().map(|(_, _, r)| r).collect();
    // The gaps between consecutive indices (and before the first), counted without listing
    // them: a damaged index can leave a gap of billions.
    let gaps = || {
        rows.first()
            .map(|r| 0..index(r))
            .into_iter()
            .chain(rows.windows(2).map(|w| index(&w[0]) + 1..index(&w[1])))
    };
    let missing: u64 = gaps().map(|g| g.end.saturating_sub(g.start)).sum();
    if missing > 0 && !partial {
        let mut shown: Vec<String> = gaps().flatten().take(8).map(|i| i.to_string()).collect();
        if missing > shown.len() as u64 {
            shown.push("…".into());
        }
        return Err(Error::InvalidField {
            origin: out.display().to_string(),
            field: "index".into(),
            message: format!(
                "points {} ({missing} in all) are in none of the inputs: is a shard's file \
                 missing? Pass --partial to merge what is there",
                shown.join(", "),
            ),
        });
    }
    write_rows(out, &rows)?;
    Ok(rows.len() as u64)
}

/// One priced design of a sweep CSV, typed for plotting.
#[derive(Debug, Clone, PartialEq)]
pub struct Design {
    pub index: u64,
    pub model: String,
    pub mat_pes: usize,
    pub mat_lanes: usize,
    pub rmac_pes: usize,
    pub rmac_lanes: usize,
    pub copies: usize,
    pub clock_mhz: f64,
    pub bits: String,
    pub dsps: usize,
    pub fps: f64,
    pub gops_per_dsp: f64,
    /// Measured top-1 in percent, when the sweep asked for accuracy.
    pub top1: Option<f64>,
    /// On the Pareto front of the file's feasible designs.
    pub pareto: bool,
}

/// The feasible designs of a sweep CSV (rows whose status is `ok`), with their Pareto flags
/// computed as [`write_pareto`] does.
pub fn read_designs(csv: &Path) -> Result<Vec<Design>> {
    let origin = csv.display().to_string();
    let rows: Vec<csv::StringRecord> = read_rows(csv)?
        .into_iter()
        .filter(|r| &r[STATUS] == "ok")
        .collect();
    let mut designs = rows
        .iter()
        .map(|r| {
            let num = |i: usize| -> Result<f64> {
                r[i].parse().or_else(|_| {
                    Error::field(&origin, HEADER[i], format!("`{}` is not a number", &r[i]))
                })
            };
            Ok(Design {
                index: num(0)? as u64,
                model: r[1].to_string(),
                mat_pes: num(3)? as usize,
                mat_lanes: num(4)? as usize,
                rmac_pes: num(5)? as usize,
                rmac_lanes: num(6)? as usize,
                copies: num(7)? as usize,
                clock_mhz: num(8)?,
                bits: r[9].to_string(),
                dsps: num(11)? as usize,
                fps: num(FPS)?,
                gops_per_dsp: num(GOPS_PER_DSP)?,
                top1: r[TOP1].parse().ok(),
                pareto: false,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    for i in pareto::front(&objectives(&rows)) {
        designs[i].pareto = true;
    }
    Ok(designs)
}

/// The objectives of feasible rows: FPS, GOPS/DSP and, when every row has it, top-1 (finite
/// numbers, checked by `read_rows`).
fn objectives(rows: &[csv::StringRecord]) -> Vec<Vec<f64>> {
    let with_accuracy = !rows.is_empty() && rows.iter().all(|r| !r[TOP1].is_empty());
    rows.iter()
        .map(|r| {
            let mut o = vec![
                r[FPS].parse().unwrap_or(0.0),
                r[GOPS_PER_DSP].parse().unwrap_or(0.0),
            ];
            if with_accuracy {
                o.push(r[TOP1].parse().unwrap_or(0.0));
            }
            o
        })
        .collect()
}

/// The path of a sweep's Pareto file: `results.csv` → `results.pareto.csv`.
pub fn pareto_path(csv: &Path) -> PathBuf {
    csv.with_extension("pareto.csv")
}

/// Writes the rows of `csv` that no other feasible row beats on FPS, GOPS/DSP and — when the
/// sweep measured it — top-1 accuracy.
pub fn write_pareto(csv: &Path) -> Result<u64> {
    let rows: Vec<csv::StringRecord> = read_rows(csv)?
        .into_iter()
        .filter(|r| &r[STATUS] == "ok")
        .collect();
    let front: Vec<csv::StringRecord> = pareto::front(&objectives(&rows))
        .into_iter()
        .map(|i| rows[i].clone())
        .collect();
    write_rows(&pareto_path(csv), &front)?;
    Ok(front.len() as u64)
}

/// The path of the published reference points written beside a sweep: `results.csv` →
/// `results.published.csv`.
pub fn published_path(csv: &Path) -> PathBuf {
    csv.with_extension("published.csv")
}

/// Writes the published accelerators (`presets/published/`) as rows comparable with the
/// sweep's: name, platform, model, precision, FPS, GOPS, GOPS/DSP, FPS/DSP (empty where the
/// paper gives no figure), so a plot of the sweep can show them as labelled points.
pub fn write_published(csv: &Path) -> Result<u64> {
    let mut bytes = csv_line(
        &[
            "name",
            "platform",
            "model",
            "precision",
            "fps",
            "gops",
            "gops_per_dsp",
            "fps_per_dsp",
            "source",
        ]
        .map(String::from),
    )?;
    let mut n = 0;
    let opt = |v: Option<f64>| v.map_or(String::new(), |x| x.to_string());
    for a in crate::accel::published::all()? {
        for p in &a.points {
            bytes.extend(csv_line(&[
                a.name.clone(),
                a.platform.clone(),
                p.model.clone(),
                p.precision.clone(),
                opt(p.fps),
                opt(p.gops),
                opt(p.gops_per_dsp),
                opt(p.fps_per_dsp),
                a.source.clone(),
            ])?);
            n += 1;
        }
    }
    crate::ron_io::write_atomic(&published_path(csv), &bytes)?;
    Ok(n)
}
