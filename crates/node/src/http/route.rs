//! Routing of `/v2/<name>/...`. Repository names contain slashes, so the
//! path is parsed from the right: the last segments say what is addressed
//! and everything before them is the name.

#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    Catalog,
    Tags {
        name: String,
    },
    Manifest {
        name: String,
        reference: &'a str,
    },
    Blob {
        name: String,
        digest: &'a str,
    },
    /// `id` is empty for `POST /v2/<name>/blobs/uploads/`.
    Upload {
        name: String,
        id: &'a str,
    },
    Referrers {
        name: String,
        digest: &'a str,
    },
}

/// Parse the part of the path after `/v2/`. `None` for paths the API does
/// not have.
pub fn parse(rest: &str) -> Option<Route<'_>> {
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    let name = |k: usize| parts[..n - k].join("/");
    if n >= 3 && parts[n - 2] == "tags" && parts[n - 1] == "list" {
        return Some(Route::Tags { name: name(2) });
    }
    if n >= 4 && parts[n - 3] == "blobs" && parts[n - 2] == "uploads" {
        return Some(Route::Upload {
            name: name(3),
            id: parts[n - 1],
        });
    }
    if n >= 3 && parts[n - 2] == "blobs" && parts[n - 1] == "uploads" {
        return Some(Route::Upload {
            name: name(2),
            id: "",
        });
    }
    if n < 3 {
        return None;
    }
    let last = parts[n - 1];
    match parts[n - 2] {
        "manifests" => Some(Route::Manifest {
            name: name(2),
            reference: last,
        }),
        "blobs" => Some(Route::Blob {
            name: name(2),
            digest: last,
        }),
        "referrers" => Some(Route::Referrers {
            name: name(2),
            digest: last,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_names_parse_from_the_right() {
        assert_eq!(parse("_catalog"), Some(Route::Catalog));
        assert_eq!(
            parse("a/b/c/tags/list"),
            Some(Route::Tags {
                name: "a/b/c".into()
            })
        );
        assert_eq!(
            parse("team/app/manifests/v1"),
            Some(Route::Manifest {
                name: "team/app".into(),
                reference: "v1"
            })
        );
        assert_eq!(
            parse("x/blobs/uploads/"),
            Some(Route::Upload {
                name: "x".into(),
                id: ""
            })
        );
        assert_eq!(
            parse("x/blobs/uploads"),
            Some(Route::Upload {
                name: "x".into(),
                id: ""
            })
        );
        assert_eq!(
            parse("x/y/blobs/uploads/abc"),
            Some(Route::Upload {
                name: "x/y".into(),
                id: "abc"
            })
        );
        assert_eq!(
            parse("x/blobs/sha256:00"),
            Some(Route::Blob {
                name: "x".into(),
                digest: "sha256:00"
            })
        );
        // A repository may itself be called "manifests".
        assert_eq!(
            parse("manifests/manifests/t"),
            Some(Route::Manifest {
                name: "manifests".into(),
                reference: "t"
            })
        );
        assert_eq!(
            parse("x/referrers/d"),
            Some(Route::Referrers {
                name: "x".into(),
                digest: "d"
            })
        );
        assert_eq!(parse("x/unknown/y"), None);
        assert_eq!(parse("x"), None);
    }
}
