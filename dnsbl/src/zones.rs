//! [`Zones`]: the zones a node serves, loaded from their datasets, looked up in-process by the
//! gateway, answered over DNS by the server, and reloaded atomically when files change.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rayon::prelude::*;

use crate::answer::{Answers, rtype};
use crate::config::{DatasetSpec, Settings, ZoneSpec};
use crate::dataset::reader::{self, FileStamp, LoadOptions, Loaded};
use crate::dataset::{Data, Dataset};
use crate::error::Error;
use crate::name::Name;
use crate::outcome::Outcome;
use crate::query::QueryName;
use crate::zone::{Catalog, Zone};

/// How many skipped lines of one dataset are logged one by one; the rest are counted.
const LOGGED_WARNINGS: usize = 20;

/// What a listed address or domain answers: its A records and TXT texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The A records (return codes such as 127.0.0.2).
    pub a: Vec<Ipv4Addr>,
    /// The TXT texts, `$` already replaced.
    pub txt: Vec<String>,
}

/// The zones served, shared by the DNS server and in-process lookups. Cheap to clone.
#[derive(Clone)]
pub struct Zones {
    inner: Arc<Inner>,
}

struct Inner {
    catalog: ArcSwap<Catalog>,
    state: Mutex<State>,
}

/// What a reload needs: the specifications and the datasets as last loaded.
struct State {
    zones: Vec<ZoneSpec>,
    options: LoadOptions,
    loaded: HashMap<DatasetSpec, Current>,
}

/// A dataset as last loaded.
struct Current {
    dataset: Arc<Dataset>,
    stamps: Vec<(PathBuf, FileStamp)>,
    version: u32,
}

/// What a reload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    /// Datasets read again and swapped in.
    pub reloaded: usize,
    /// Datasets whose reload failed; their previous data stays in service.
    pub failed: usize,
}

impl Zones {
    /// Loads every dataset of `settings` (in parallel) and builds the zones.
    ///
    /// # Errors
    ///
    /// The first dataset that cannot be loaded: an unreadable file, or a malformed line in
    /// strict mode.
    pub fn load(settings: &Settings) -> Result<Zones, Error> {
        let specs = unique_specs(&settings.zones);
        let loaded: Vec<(DatasetSpec, Result<Loaded, Error>)> = specs
            .into_par_iter()
            .map(|spec| {
                let result = load_one(&spec, settings.load);
                (spec, result)
            })
            .collect();
        let mut current = HashMap::new();
        for (spec, result) in loaded {
            let loaded = result?;
            report(&spec, &settings.zones, &loaded);
            current.insert(spec, Current::from(loaded));
        }
        let catalog = build_catalog(&settings.zones, &current);
        let state = State {
            zones: settings.zones.clone(),
            options: settings.load,
            loaded: current,
        };
        let inner = Inner {
            catalog: ArcSwap::from_pointee(catalog),
            state: Mutex::new(state),
        };
        Ok(Zones {
            inner: Arc::new(inner),
        })
    }

    /// Reloads every dataset whose files changed (modification time or size) since it was
    /// loaded, then swaps the new zones in at once. A dataset that fails to reload keeps its
    /// previous data, so queries never fail because of a bad file.
    pub fn reload_changed(&self) -> ReloadSummary {
        self.reload_where(|current| {
            current
                .stamps
                .iter()
                .any(|(path, stamp)| FileStamp::of(path).ok() != Some(*stamp))
        })
    }

    /// Reloads every dataset that reads `path`, whether or not it looks changed: the entry
    /// point for a sync that has just renamed a new file into place.
    pub fn reload_path(&self, path: &Path) -> ReloadSummary {
        self.reload_where(|current| current.stamps.iter().any(|(p, _)| p == path))
    }

    fn reload_where(&self, stale: impl Fn(&Current) -> bool + Sync) -> ReloadSummary {
        // One reload at a time; queries go on against the current catalog meanwhile.
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let options = state.options;
        let stale_specs: Vec<DatasetSpec> = state
            .loaded
            .iter()
            .filter(|(_, c)| stale(c))
            .map(|(s, _)| s.clone())
            .collect();
        if stale_specs.is_empty() {
            return ReloadSummary::default();
        }
        let results: Vec<(DatasetSpec, Result<Loaded, Error>)> = stale_specs
            .into_par_iter()
            .map(|spec| {
                let result = load_one(&spec, options);
                (spec, result)
            })
            .collect();

        let mut summary = ReloadSummary::default();
        for (spec, result) in results {
            match result {
                Ok(loaded) => {
                    report(&spec, &state.zones, &loaded);
                    state.loaded.insert(spec, Current::from(loaded));
                    summary.reloaded += 1;
                }
                Err(error) => {
                    tracing::error!(
                        dataset = %spec,
                        %error,
                        "dataset reload failed; previous data kept"
                    );
                    summary.failed += 1;
                }
            }
        }
        let catalog = build_catalog(&state.zones, &state.loaded);
        self.inner.catalog.store(Arc::new(catalog));
        summary
    }

    /// Looks up `ip` in `zone`, as a DNS query for its reversed name would (an IPv6 address
    /// as its nibble name). Returns the listing, or `None` when not listed.
    pub fn lookup_ip(&self, zone: &str, ip: IpAddr) -> Option<Listing> {
        let name = match ip {
            IpAddr::V4(v4) => {
                let [a, b, c, d] = v4.octets();
                format!("{d}.{c}.{b}.{a}.{zone}")
            }
            IpAddr::V6(v6) => {
                let hex = format!("{:032x}", u128::from(v6));
                let nibbles: Vec<String> = hex.chars().rev().map(String::from).collect();
                format!("{}.{zone}", nibbles.join("."))
            }
        };
        self.lookup_name(&name)
    }

    /// Looks up `domain` in `zone` (a dnset or combined zone), as a DNS query for
    /// `domain.zone` would. Returns the listing, or `None` when not listed.
    pub fn lookup_domain(&self, zone: &str, domain: &str) -> Option<Listing> {
        let domain = domain.trim_end_matches('.');
        self.lookup_name(&format!("{domain}.{zone}"))
    }

    fn lookup_name(&self, text: &str) -> Option<Listing> {
        let name = Name::parse(text.as_bytes())?;
        let query = QueryName::from_name(name.wire())?;
        let catalog = self.inner.catalog.load();
        let mut answers = Answers::default();
        let resolution = catalog.resolve(&query, rtype::ANY, 1, &mut answers);
        if resolution.outcome != Outcome::Listed {
            return None;
        }
        let mut listing = Listing {
            a: Vec::new(),
            txt: Vec::new(),
        };
        for record in answers.records() {
            let rdata = answers.rdata(record);
            match record.rtype {
                rtype::A => {
                    if let Ok(octets) = <[u8; 4]>::try_from(rdata) {
                        listing.a.push(octets.into());
                    }
                }
                rtype::TXT => listing
                    .txt
                    .push(String::from_utf8_lossy(rdata.get(1..).unwrap_or_default()).into_owned()),
                _ => {}
            }
        }
        (!listing.a.is_empty()).then_some(listing)
    }

    /// The current catalog, for the server.
    pub(crate) fn catalog(&self) -> &ArcSwap<Catalog> {
        &self.inner.catalog
    }

    /// The names of the zones served.
    pub fn zone_names(&self) -> Vec<String> {
        self.inner
            .catalog
            .load()
            .zones()
            .iter()
            .map(|z| z.name.to_string())
            .collect()
    }
}

impl From<Loaded> for Current {
    fn from(loaded: Loaded) -> Current {
        Current {
            dataset: Arc::new(loaded.dataset),
            stamps: loaded.stamps,
            version: loaded.version,
        }
    }
}

/// Each dataset specification once, even when several zones use it (it is loaded once and
/// shared, as rbldnsd does).
fn unique_specs(zones: &[ZoneSpec]) -> Vec<DatasetSpec> {
    let mut specs: Vec<DatasetSpec> = Vec::new();
    for spec in zones.iter().flat_map(|z| &z.datasets) {
        if !specs.contains(spec) {
            specs.push(spec.clone());
        }
    }
    specs
}

fn load_one(spec: &DatasetSpec, options: LoadOptions) -> Result<Loaded, Error> {
    let mut loaded = reader::load(spec.kind, &spec.to_string(), &spec.files, options)?;
    if let Some(a) = spec.a {
        override_a(&mut loaded.dataset, a);
    }
    Ok(loaded)
}

/// Gives every listing of a dataset the configured return code.
fn override_a(dataset: &mut Dataset, a: Ipv4Addr) {
    dataset.values.override_a(a);
    if let Data::Combined(combined) = &mut dataset.data {
        for part in &mut combined.parts {
            part.values.override_a(a);
        }
    }
}

fn build_catalog(zones: &[ZoneSpec], loaded: &HashMap<DatasetSpec, Current>) -> Catalog {
    let zones = zones
        .iter()
        .map(|spec| {
            let current: Vec<&Current> =
                spec.datasets.iter().filter_map(|d| loaded.get(d)).collect();
            let datasets = current.iter().map(|c| Arc::clone(&c.dataset)).collect();
            let versions: Vec<u32> = current.iter().map(|c| c.version).collect();
            Zone::new(spec.name.clone(), datasets, &versions, spec.aggregate)
        })
        .collect();
    Catalog::new(zones)
}

/// Logs one dataset load: an info line, and its skipped lines at warn.
fn report(spec: &DatasetSpec, zones: &[ZoneSpec], loaded: &Loaded) {
    for warning in loaded.warnings.iter().take(LOGGED_WARNINGS) {
        tracing::warn!(
            file = %warning.path.display(),
            line = warning.line,
            problem = warning.message,
            "dataset line skipped"
        );
    }
    if loaded.warnings.len() > LOGGED_WARNINGS {
        let more = loaded.warnings.len() - LOGGED_WARNINGS;
        tracing::warn!(dataset = %spec, more, "more dataset lines skipped");
    }
    let entries = loaded.dataset.entries();
    let bytes = loaded.dataset.heap_bytes();
    let bytes_per_entry = if entries == 0 {
        0.0
    } else {
        bytes as f64 / entries as f64
    };
    let parts = match &loaded.dataset.data {
        Data::Combined(combined) => combined
            .parts
            .iter()
            .map(|p| &*p.label)
            .collect::<Vec<_>>()
            .join(","),
        _ => String::new(),
    };
    let names: Vec<String> = zones
        .iter()
        .filter(|z| z.datasets.contains(spec))
        .map(|z| z.name.to_string())
        .collect();
    tracing::info!(
        zone = %names.join(","),
        dataset = %spec,
        parts = %parts,
        entries,
        bytes_per_entry = format_args!("{bytes_per_entry:.1}"),
        ms = loaded.elapsed.as_millis() as u64,
        warnings = loaded.warnings.len(),
        "dataset loaded"
    );
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;
    use crate::config::DnsblConfig;
    use crate::zone::Aggregate;

    /// A directory of dataset files for one test, removed at the end.
    struct Files(PathBuf);

    impl Files {
        fn new(label: &str) -> Files {
            let dir = std::env::temp_dir()
                .join(format!("moat-dnsbl-unit-{label}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create a directory");
            Files(dir)
        }

        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            let temporary = path.with_extension("tmp");
            std::fs::write(&temporary, text).expect("write");
            std::fs::rename(&temporary, &path).expect("rename");
            path.display().to_string()
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn zones(zones: &[(&str, &[String], Aggregate)]) -> Zones {
        let mut settings = DnsblConfig::default()
            .validate(Path::new(""))
            .expect("defaults");
        settings.zones = zones
            .iter()
            .map(|(name, specs, aggregate)| ZoneSpec {
                name: Name::parse(name.as_bytes()).expect("a name"),
                datasets: specs
                    .iter()
                    .map(|s| DatasetSpec::parse(s, Path::new("")).expect("a spec"))
                    .collect(),
                aggregate: *aggregate,
            })
            .collect();
        Zones::load(&settings).expect("loads")
    }

    #[test]
    fn lookup_ip_answers_like_a_dns_query() {
        let files = Files::new("ip");
        let v4 = files.write("v4", ":127.0.0.4:Listed $\n192.0.2.0/24\n!192.0.2.7\n");
        let v6 = files.write("v6", ":127.0.0.5:v6 $\n2001:db8::/32\n");
        let zones = zones(&[(
            "bl.example",
            &[format!("ip4set:{v4}"), format!("ip6trie:{v6}")],
            Aggregate::All,
        )]);

        let listing = zones
            .lookup_ip("bl.example", "192.0.2.9".parse().expect("ip"))
            .expect("listed");
        assert_eq!(
            listing,
            Listing {
                a: vec![Ipv4Addr::new(127, 0, 0, 4)],
                txt: vec!["Listed 192.0.2.9".into()]
            }
        );
        assert_eq!(
            zones.lookup_ip("bl.example", "192.0.2.7".parse().expect("ip")),
            None
        );
        assert_eq!(
            zones.lookup_ip("other.example", "192.0.2.9".parse().expect("ip")),
            None
        );
        let v6: Ipv6Addr = "2001:db8::25".parse().expect("ip");
        let listing = zones.lookup_ip("bl.example", v6.into()).expect("listed");
        assert_eq!(listing.txt, ["v6 2001:db8::25"]);
        let mapped: Ipv6Addr = "::ffff:192.0.2.9".parse().expect("ip");
        assert!(
            zones.lookup_ip("bl.example", mapped.into()).is_some(),
            "IPv4-mapped looks up IPv4"
        );
    }

    #[test]
    fn lookup_domain_uses_dnset_wildcards() {
        let files = Files::new("domain");
        let names = files.write("names", ".spam.example :3:Spam domain $\n");
        let zones = zones(&[("dbl.example", &[format!("dnset:{names}")], Aggregate::All)]);
        let listing = zones
            .lookup_domain("dbl.example", "www.spam.example.")
            .expect("listed");
        assert_eq!(listing.a, [Ipv4Addr::new(127, 0, 0, 3)]);
        assert_eq!(listing.txt, ["Spam domain spam.example"]);
        assert_eq!(zones.lookup_domain("dbl.example", "ham.example"), None);
    }

    #[test]
    fn aggregated_zones_answer_every_source_or_a_bitmask() {
        let files = Files::new("aggregate");
        let spam = files.write("spam", ":2:spam\n192.0.2.1\n");
        let proxy = files.write("proxy", ":4:proxy\n192.0.2.1\n192.0.2.2\n");
        let specs = [format!("ip4set:{spam}"), format!("ip4set:{proxy}")];
        let zones = zones(&[
            ("all.example", &specs, Aggregate::All),
            ("mask.example", &specs, Aggregate::Bitmask),
        ]);
        let ip = "192.0.2.1".parse().expect("ip");
        let all = zones.lookup_ip("all.example", ip).expect("listed");
        assert_eq!(
            all.a,
            [Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 4)]
        );
        let mask = zones.lookup_ip("mask.example", ip).expect("listed");
        assert_eq!(mask.a, [Ipv4Addr::new(127, 0, 0, 6)]);
        assert_eq!(mask.txt, ["spam", "proxy"]);
    }

    #[test]
    fn reload_path_swaps_in_the_new_data() {
        let files = Files::new("reload");
        let list = files.write("list", "192.0.2.1\n");
        let zones = zones(&[("bl.example", &[format!("ip4set:{list}")], Aggregate::All)]);
        let ip = "192.0.2.2".parse().expect("ip");
        assert_eq!(zones.lookup_ip("bl.example", ip), None);
        files.write("list", "192.0.2.2\n");
        assert_eq!(
            zones.reload_path(Path::new(&list)),
            ReloadSummary {
                reloaded: 1,
                failed: 0
            }
        );
        assert!(zones.lookup_ip("bl.example", ip).is_some());
        assert_eq!(
            zones.reload_changed(),
            ReloadSummary::default(),
            "nothing changed since"
        );
    }
}
