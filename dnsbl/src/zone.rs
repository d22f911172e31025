//! A zone (datasets under one name, with SOA and NS) and the catalog of all zones served:
//! where a query name becomes an [`Outcome`] and answer records.
//!
//! The rules are rbldnsd's: the most specific zone containing the name answers; every dataset
//! of the zone is asked and all their listings are answered; at the apex SOA and NS come from
//! the first dataset that has them. Where rbldnsd says NXDOMAIN for a name that has listed
//! names below it, we say NOERROR with no data (RFC 8020).

use std::sync::Arc;

use crate::answer::{Answers, Want, rtype};
use crate::dataset::Dataset;
use crate::dataset::special::{NsSet, Soa};
use crate::name::Name;
use crate::outcome::Outcome;
use crate::query::{QueryName, Subject};

/// How a zone with several datasets combines the A records of a name listed in more than one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    /// One A record per listing (rbldnsd's behaviour, as Spamhaus ZEN answers).
    #[default]
    All,
    /// One A record, the bitwise OR of all (as SURBL's multi list answers).
    Bitmask,
}

/// A served zone.
#[derive(Debug)]
pub(crate) struct Zone {
    /// The zone's name, lower case.
    pub name: Name,
    /// Its number of labels.
    pub labels: usize,
    /// The datasets, in configuration order.
    pub datasets: Vec<Arc<Dataset>>,
    /// The SOA (from the first dataset that has one), with the serial resolved.
    pub soa: Option<Arc<Soa>>,
    /// The NS records (from the first dataset that has them).
    pub ns: Option<Arc<NsSet>>,
    /// Whether IPv4 datasets serve here (IPv4-mapped and 6to4 names then look up IPv4).
    pub ip4: bool,
    /// How A records of several listings combine.
    pub aggregate: Aggregate,
    /// The SOA record's data in wire form (empty without a SOA), written once here because
    /// every negative answer carries it.
    soa_rdata: Box<[u8]>,
}

impl Zone {
    /// Builds a zone over loaded datasets; `versions` are the datasets' versions.
    pub(crate) fn new(
        name: Name,
        datasets: Vec<Arc<Dataset>>,
        versions: &[u32],
        aggregate: Aggregate,
    ) -> Zone {
        let name = name.to_lowercase();
        let soa = datasets.iter().find_map(|d| d.meta.soa.clone());
        let ns = datasets
            .iter()
            .find_map(|d| d.meta.ns.clone())
            .filter(|ns| !ns.names.is_empty());
        let newest = versions.iter().copied().max().unwrap_or(0);
        // The serial answered: the SOA's, or the newest dataset version when that is 0.
        let serial = soa
            .as_ref()
            .map_or(0, |s| if s.serial == 0 { newest } else { s.serial });
        let ip4 = datasets.iter().any(|d| d.kind.is_ip4());
        let soa_rdata = soa
            .as_deref()
            .map(|soa| encode_soa(soa, serial))
            .unwrap_or_default();
        Zone {
            soa_rdata,
            labels: name.label_count(),
            name,
            datasets,
            soa,
            ns,
            ip4,
            aggregate,
        }
    }

    /// The SOA record's data in wire form, with the serial answered (empty without a SOA).
    pub(crate) fn soa_rdata(&self) -> &[u8] {
        &self.soa_rdata
    }

    /// Answers a name below (or at) this zone.
    fn answer(&self, name: &QueryName, qtype: u16, out: &mut Answers) -> Outcome {
        let depth = name.count() - self.labels;
        let want = Want::for_type(qtype);
        let mut found = false;

        // At the apex SOA and NS come first; asking for one the zone lacks is refused.
        if depth == 0 {
            if (want.soa && self.soa.is_none()) || (want.ns && self.ns.is_none()) {
                return Outcome::ApexWithoutData;
            }
            if let (true, Some(soa)) = (want.soa, &self.soa) {
                out.add_record(rtype::SOA, soa.ttl, self.soa_rdata());
            }
            if let (true, Some(ns)) = (want.ns, &self.ns) {
                for server in &ns.names {
                    out.add_record(rtype::NS, ns.ttl, server.wire());
                }
            }
            found = true;
        }

        let subject = Subject::new(name, depth, self.ip4);
        for dataset in &self.datasets {
            found |= dataset.query(&subject, want, out);
        }
        if self.aggregate == Aggregate::Bitmask {
            out.merge_a_bitmask();
        }

        match (found, out.is_empty()) {
            (true, false) => Outcome::Listed,
            (true, true) => Outcome::NoData,
            (false, _) if self.datasets.iter().any(|d| d.has_names_below(&subject)) => {
                Outcome::EmptyNonTerminal
            }
            (false, _) => Outcome::NxDomain,
        }
    }
}

/// The data of a SOA record in wire form (RFC 1035 section 3.3.13), with `serial` for its
/// own.
fn encode_soa(soa: &Soa, serial: u32) -> Box<[u8]> {
    let mut rdata = Vec::with_capacity(soa.mname.wire().len() + soa.rname.wire().len() + 20);
    rdata.extend_from_slice(soa.mname.wire());
    rdata.extend_from_slice(soa.rname.wire());
    for field in [serial, soa.refresh, soa.retry, soa.expire, soa.minimum] {
        rdata.extend_from_slice(&field.to_be_bytes());
    }
    rdata.into_boxed_slice()
}

/// Every zone served, most specific first. Immutable: a reload builds a new catalog and
/// swaps it in whole, so a query sees either the old zones or the new, never a mix.
#[derive(Debug, Default)]
pub(crate) struct Catalog {
    zones: Vec<Zone>,
}

/// A query's outcome, with the zone that answered (for the SOA and NS of the authority
/// section).
pub(crate) struct Resolution<'c> {
    /// How the query ended.
    pub outcome: Outcome,
    /// The zone that answered, if any.
    pub zone: Option<&'c Zone>,
}

impl Catalog {
    /// Builds a catalog; zones with more labels are tried first.
    pub(crate) fn new(mut zones: Vec<Zone>) -> Catalog {
        zones.sort_by_key(|z| std::cmp::Reverse(z.labels));
        Catalog { zones }
    }

    /// The zones.
    pub(crate) fn zones(&self) -> &[Zone] {
        &self.zones
    }

    /// The most specific zone containing `name`.
    pub(crate) fn find(&self, name: &QueryName) -> Option<&Zone> {
        self.zones.iter().find(|z| {
            z.labels <= name.count() && name.suffix(name.count() - z.labels) == z.name.wire()
        })
    }

    /// Answers `name`, type `qtype`, class `qclass`, leaving the answer records in `out`.
    pub(crate) fn resolve(
        &self,
        name: &QueryName,
        qtype: u16,
        qclass: u16,
        out: &mut Answers,
    ) -> Resolution<'_> {
        const CLASS_IN: u16 = 1;
        const CLASS_ANY: u16 = 255;
        out.clear();
        let done = |outcome| Resolution {
            outcome,
            zone: None,
        };
        if qtype >= rtype::TSIG && qtype != rtype::ANY {
            return done(Outcome::NotImplemented);
        }
        if qclass != CLASS_IN && qclass != CLASS_ANY {
            return done(Outcome::WrongClass);
        }
        let Some(zone) = self.find(name) else {
            return done(Outcome::NotOurZone);
        };
        let outcome = zone.answer(name, qtype, out);
        if !outcome.authoritative() {
            out.clear();
        }
        Resolution {
            outcome,
            zone: Some(zone),
        }
    }
}
