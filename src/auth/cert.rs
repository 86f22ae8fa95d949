//! The names a client certificate carries: its subject's common names and
//! its DNS subject alternative names. The TLS handshake has already proved
//! that the client holds the key and that the certificate chains to
//! `tls_client_ca`; this only reads the names that the identities file maps
//! to an identity.

use rustls_pki_types::CertificateDer;

/// DER tags read here.
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject CNs, then the DNS SANs, of `cert` (nothing when it does not
/// parse: such a certificate maps to no identity).
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    let mut names = common_names(parsed.subject());
    names.extend(parsed.valid_dns_names().map(str::to_string));
    names
}

/// One DER element at the start of `input`: (tag, contents, rest).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The commonName values of a subject (the contents of its RDNSequence):
/// SET { SEQUENCE { OID, string } }, string types read as UTF-8.
fn common_names(mut subject: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    while let Some((tag, set, rest)) = element(subject) {
        subject = rest;
        if tag != SET {
            continue;
        }
        let mut attrs = set;
        while let Some((tag, attr, rest)) = element(attrs) {
            attrs = rest;
            if tag != SEQUENCE {
                continue;
            }
            let Some((OID, oid, value)) = element(attr) else {
                continue;
            };
            if oid != COMMON_NAME {
                continue;
            }
            if let Some((_, text, _)) = element(value)
                && let Ok(text) = std::str::from_utf8(text)
            {
                found.push(text.to_string());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_common_name_and_dns_sans() {
        let mut params = rcgen::CertificateParams::new(vec!["checkout.internal".into()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "acme");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "checkout-service");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        assert_eq!(names(&der), ["checkout-service", "checkout.internal"]);
        assert!(names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
