//! Spec-level tests of the OCI Distribution Spec v1.1, written from the
//! spec text, against a real `wharf serve` process over HTTP. Section names
//! in comments are those of the spec.

mod common;

use common::registry::{error_code, header, Reg, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
use common::{sha256, Node};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn node() -> (tempfile::TempDir, Node, Reg) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path());
    let reg = Reg::new(&node.addr());
    (dir, node, reg)
}

// "Determining support": GET /v2/ answers 200 with the API version header.
#[tokio::test]
async fn base_endpoint_reports_api_version() {
    let (_d, _n, reg) = node();
    let r = reg.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "docker-distribution-api-version"),
        "registry/2.0"
    );
}

// "Pulling blobs" with Range, "Pushing a blob monolithically" (POST ?digest=).
#[tokio::test]
async fn monolithic_upload_then_get_head_and_ranges() {
    let (_d, _n, reg) = node();
    let bytes = b"0123456789abcdef".to_vec();
    let d = reg.blob("a/b/c", &bytes).await;
    let r = reg.get(&format!("/v2/a/b/c/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);

    let r = reg
        .req(Method::HEAD, &format!("/v2/a/b/c/blobs/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), "16");

    let r = reg
        .req(Method::GET, &format!("/v2/a/b/c/blobs/{d}"))
        .header("range", "bytes=4-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&r, "content-range"), "bytes 4-7/16");
    assert_eq!(&r.bytes().await.unwrap()[..], b"4567");

    let r = reg
        .req(Method::GET, &format!("/v2/a/b/c/blobs/{d}"))
        .header("range", "bytes=-3")
        .send()
        .await
        .unwrap();
    assert_eq!(&r.bytes().await.unwrap()[..], b"def");

    let r = reg
        .req(Method::GET, &format!("/v2/a/b/c/blobs/{d}"))
        .header("range", "bytes=99-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range"), "bytes */16");

    // A blob of another repository is not visible here.
    let r = reg.get(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

// "POST then PUT": obtain a session, then PUT the whole blob with ?digest=.
#[tokio::test]
async fn post_then_put_upload() {
    let (_d, _n, reg) = node();
    let r = reg
        .req(Method::POST, "/v2/r/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = header(&r, "location");
    assert!(loc.starts_with("/v2/r/blobs/uploads/"), "{loc}");
    let body = b"post then put".to_vec();
    let d = sha256(&body);
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/r/blobs/{d}"));
    assert_eq!(
        reg.get(&format!("/v2/r/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        body
    );
}

// "Pushing a blob in chunks": PATCH with Content-Range, out-of-order chunks
// answered 416, status GET answered 204 with Range.
#[tokio::test]
async fn chunked_upload_in_order_and_out_of_order() {
    let (_d, _n, reg) = node();
    let loc = header(
        &reg.req(Method::POST, "/v2/r/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let patch = |range: &'static str, body: &'static [u8], loc: String| {
        reg.req(Method::PATCH, &loc)
            .header("content-type", "application/octet-stream")
            .header("content-range", range)
            .header("content-length", body.len().to_string())
            .body(body)
            .send()
    };
    let r = patch("0-4", b"hello", loc.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-4");
    let loc = header(&r, "location");

    let r = patch("10-14", b"xxxxx", loc.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "range"), "0-4");

    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range"), "0-4");

    let r = patch("5-10", b" world", loc.clone()).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let d = sha256(b"hello world");
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(
        &reg.get(&format!("/v2/r/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap()[..],
        b"hello world"
    );
}

// Streamed upload: PATCH without Content-Range, then PUT with no body;
// and a final chunk carried by the PUT itself.
#[tokio::test]
async fn streamed_upload_and_final_chunk_in_put() {
    let (_d, _n, reg) = node();
    let loc = header(
        &reg.req(Method::POST, "/v2/s/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = reg
        .req(Method::PATCH, &loc)
        .body(vec![7u8; 100_000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range"), "0-99999");
    let mut all = vec![7u8; 100_000];
    all.extend_from_slice(b"tail");
    let d = sha256(&all);
    let r = reg
        .req(
            Method::PUT,
            &format!("{}?digest={d}", header(&r, "location")),
        )
        .header("content-range", "100000-100003")
        .body(&b"tail"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        reg.get(&format!("/v2/s/blobs/{d}"))
            .await
            .bytes()
            .await
            .unwrap()
            .len(),
        100_004
    );
}

// Cancelling an upload: DELETE the session; it is unknown afterwards.
#[tokio::test]
async fn cancelled_upload_is_unknown() {
    let (_d, _n, reg) = node();
    let loc = header(
        &reg.req(Method::POST, "/v2/r/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let r = reg.req(Method::DELETE, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "BLOB_UPLOAD_UNKNOWN");
    // A session of one repository cannot be used through another.
    let loc = header(
        &reg.req(Method::POST, "/v2/r/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let other = loc.replace("/v2/r/", "/v2/q/");
    assert_eq!(
        reg.req(Method::GET, &other).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

// A digest that does not match the content: DIGEST_INVALID, nothing stored.
#[tokio::test]
async fn digest_mismatch_stores_nothing() {
    let (_d, _n, reg) = node();
    let claimed = sha256(b"what the client claims");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/r/blobs/uploads/?digest={claimed}"),
        )
        .body(&b"other bytes"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    for d in [claimed, sha256(b"other bytes")] {
        assert_eq!(
            reg.get(&format!("/v2/r/blobs/{d}")).await.status(),
            StatusCode::NOT_FOUND
        );
    }
}

// "Mounting a blob from another repository": 201 when the source has it,
// otherwise 202 and a fresh upload session.
#[tokio::test]
async fn cross_repository_mount() {
    let (_d, _n, reg) = node();
    let d = reg.blob("src/repo", b"shared layer").await;
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={d}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "location"), format!("/v2/dst/blobs/{d}"));
    assert_eq!(
        reg.get(&format!("/v2/dst/blobs/{d}")).await.status(),
        StatusCode::OK
    );

    let missing = sha256(b"not anywhere");
    let r = reg
        .req(
            Method::POST,
            &format!("/v2/dst/blobs/uploads/?mount={missing}&from=src/repo"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(header(&r, "location").starts_with("/v2/dst/blobs/uploads/"));
}

// "Pushing manifests" / "Pulling manifests": byte-exact, by tag and digest.
#[tokio::test]
async fn manifests_round_trip_byte_exact_by_tag_and_digest() {
    let (_d, _n, reg) = node();
    let m = reg.image("team/app", &[b"layer one"]).await;
    // Unusual but valid formatting must survive byte for byte.
    let mut pretty = b"  ".to_vec();
    pretty.extend_from_slice(&m);
    pretty.extend_from_slice(b"\n\n");
    let d = sha256(&pretty);
    let r = reg
        .put_manifest("team/app", "v1", OCI_MANIFEST, &pretty)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest"), d);
    assert_eq!(
        header(&r, "location"),
        format!("/v2/team/app/manifests/{d}")
    );

    for reference in ["v1", d.as_str()] {
        let r = reg
            .get(&format!("/v2/team/app/manifests/{reference}"))
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type"), OCI_MANIFEST);
        assert_eq!(header(&r, "docker-content-digest"), d);
        assert_eq!(r.bytes().await.unwrap().to_vec(), pretty);
    }
    let r = reg
        .req(Method::HEAD, "/v2/team/app/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), pretty.len().to_string());

    // PUT by digest works, and a wrong digest is refused.
    let r = reg
        .put_manifest("team/app", &d, OCI_MANIFEST, &pretty)
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let wrong = sha256(b"x");
    let r = reg
        .put_manifest("team/app", &wrong, OCI_MANIFEST, &pretty)
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");

    let r = reg.get("/v2/team/app/manifests/nope").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
}

// A manifest naming blobs the repository does not have is refused, and
// nothing of it is stored.
#[tokio::test]
async fn manifest_with_unknown_blobs_or_children_is_refused() {
    let (_d, _n, reg) = node();
    let m = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256(b"no config"), "size": 9},
        "layers": []
    });
    let r = reg
        .put_manifest("r", "t", OCI_MANIFEST, m.to_string().as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "MANIFEST_BLOB_UNKNOWN");
    assert_eq!(
        reg.get("/v2/r/manifests/t").await.status(),
        StatusCode::NOT_FOUND
    );

    let child = reg.image("r", &[b"l"]).await;
    let child_d = sha256(&child);
    let index = |d: &str| {
        json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
               "manifests": [{"mediaType": OCI_MANIFEST, "digest": d, "size": child.len(),
                              "platform": {"os": "linux", "architecture": "arm64"}}]})
        .to_string()
    };
    let r = reg
        .put_manifest("r", "multi", OCI_INDEX, index(&child_d).as_bytes())
        .await;
    assert_eq!(
        error_code(r).await,
        "MANIFEST_BLOB_UNKNOWN",
        "child not pushed yet"
    );
    assert_eq!(
        reg.put_manifest("r", &child_d, OCI_MANIFEST, &child)
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = reg
        .put_manifest("r", "multi", OCI_INDEX, index(&child_d).as_bytes())
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = reg.get("/v2/r/manifests/multi").await;
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
}

// Invalid manifests: not JSON, wrong schema, oversized, mismatched type.
#[tokio::test]
async fn invalid_manifests_are_refused_with_spec_errors() {
    let (_d, _n, reg) = node();
    for (body, ct) in [
        (b"{not json".to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":1}"#.to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#.to_vec(), OCI_MANIFEST),
        (br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(), OCI_MANIFEST),
    ] {
        let r = reg.put_manifest("r", "bad", ct, &body).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        assert_eq!(error_code(r).await, "MANIFEST_INVALID");
    }
    let mut huge = br#"{"schemaVersion":2,"annotations":{"x":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'a', 4 * 1024 * 1024));
    huge.extend_from_slice(br#""}}"#);
    let r = reg.put_manifest("r", "huge", OCI_MANIFEST, &huge).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(r).await, "SIZE_INVALID");
    assert_eq!(
        reg.get("/v2/_catalog").await.json::<Value>().await.unwrap()["repositories"],
        json!([])
    );
}

// Names, tags and digests outside the grammar.
#[tokio::test]
async fn bad_names_references_and_digests() {
    let (_d, _n, reg) = node();
    let r = reg.get("/v2/Upper/Case/tags/list").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = reg
        .req(Method::POST, "/v2/a..b/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "NAME_INVALID");
    let r = reg.get("/v2/ok/blobs/sha256:short").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .get(&format!("/v2/ok/blobs/md5:{}", "a".repeat(32)))
        .await;
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg.put_manifest("ok", ".badtag", OCI_MANIFEST, b"{}").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Pulling one is a manifest that cannot exist: 404, as the OCI
    // conformance suite (v1.1.1) requires of GET and HEAD.
    for method in [Method::GET, Method::HEAD] {
        let r = reg
            .req(method.clone(), "/v2/ok/manifests/.badtag")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{method}");
    }
    let r = reg.get("/v2/ok/manifests/.badtag").await;
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");
    let r = reg
        .req(Method::POST, "/v2/ok/blobs/uploads/?digest=sha256:zz")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "DIGEST_INVALID");
    let r = reg
        .req(
            Method::PUT,
            "/v2/ok/blobs/uploads/nosuchsession?digest=sha256:00",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

// "Listing Tags": lexical order, n/last, Link header; unknown repo 404.
#[tokio::test]
async fn tags_list_sorted_and_paginated() {
    let (_d, _n, reg) = node();
    let m = reg.image("p/q", &[]).await;
    for t in ["b", "a", "c10", "c2", "A"] {
        assert_eq!(
            reg.put_manifest("p/q", t, OCI_MANIFEST, &m).await.status(),
            StatusCode::CREATED
        );
    }
    let v: Value = reg.get("/v2/p/q/tags/list").await.json().await.unwrap();
    assert_eq!(
        v,
        json!({"name": "p/q", "tags": ["A", "a", "b", "c10", "c2"]})
    );
    let r = reg.get("/v2/p/q/tags/list?n=2").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/p/q/tags/list?n=2&last=a>; rel=\"next\""
    );
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["A", "a"]));
    let r = reg.get("/v2/p/q/tags/list?n=2&last=a").await;
    assert_eq!(
        r.json::<Value>().await.unwrap()["tags"],
        json!(["b", "c10"])
    );
    let r = reg.get("/v2/p/q/tags/list?n=10&last=c10").await;
    assert_eq!(header(&r, "link"), "");
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!(["c2"]));
    let r = reg.get("/v2/p/q/tags/list?n=0").await;
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = reg.get("/v2/p/q/tags/list?n=x").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = reg.get("/v2/nobody/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "NAME_UNKNOWN");
}

#[tokio::test]
async fn catalog_sorted_and_paginated() {
    let (_d, _n, reg) = node();
    for repo in ["zeta", "alpha/one", "alpha", "mid/x/y"] {
        reg.blob(repo, repo.as_bytes()).await;
    }
    let v: Value = reg.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(
        v["repositories"],
        json!(["alpha", "alpha/one", "mid/x/y", "zeta"])
    );
    let r = reg.get("/v2/_catalog?n=3").await;
    assert_eq!(
        header(&r, "link"),
        "</v2/_catalog?n=3&last=mid%2Fx%2Fy>; rel=\"next\""
    );
    let v: Value = reg
        .get("/v2/_catalog?n=3&last=mid%2Fx%2Fy")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["repositories"], json!(["zeta"]));
}

// "Deleting tags", "Deleting manifests", "Deleting blobs".
#[tokio::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let (_d, _n, reg) = node();
    let m = reg.image("d", &[b"l1"]).await;
    let d = sha256(&m);
    reg.put_manifest("d", "t1", OCI_MANIFEST, &m).await;
    reg.put_manifest("d", "t2", OCI_MANIFEST, &m).await;

    let r = reg
        .req(Method::DELETE, "/v2/d/manifests/t1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/d/manifests/t1").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.get(&format!("/v2/d/manifests/{d}")).await.status(),
        StatusCode::OK,
        "untag keeps the manifest"
    );

    let r = reg
        .req(Method::DELETE, &format!("/v2/d/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        reg.get("/v2/d/manifests/t2").await.status(),
        StatusCode::NOT_FOUND,
        "its tags go with it"
    );
    let r = reg
        .req(Method::DELETE, &format!("/v2/d/manifests/{d}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(r).await, "MANIFEST_UNKNOWN");

    let b = sha256(b"l1");
    assert_eq!(
        reg.req(Method::DELETE, &format!("/v2/d/blobs/{b}"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        reg.get(&format!("/v2/d/blobs/{b}")).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = reg
        .req(Method::DELETE, &format!("/v2/d/blobs/{b}"))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r).await, "BLOB_UNKNOWN");
}

// "Listing Referrers": subject, artifactType filter, OCI-Subject header.
#[tokio::test]
async fn referrers_with_artifact_type_filter() {
    let (_d, _n, reg) = node();
    let subject = reg.image("art", &[b"base"]).await;
    let sd = sha256(&subject);
    reg.put_manifest("art", "v1", OCI_MANIFEST, &subject).await;
    let empty = reg.blob("art", b"{}").await;
    let mut pushed = Vec::new();
    for (kind, layer) in [
        ("application/vnd.example.sig", &b"sig"[..]),
        ("application/vnd.example.sbom", &b"sbom"[..]),
    ] {
        let ld = reg.blob("art", layer).await;
        let m = json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [{"mediaType": "application/octet-stream", "digest": ld, "size": layer.len()}],
            "subject": {"mediaType": OCI_MANIFEST, "digest": sd, "size": subject.len()},
            "annotations": {"org.example.kind": kind}
        })
        .to_string();
        let r = reg
            .put_manifest("art", &sha256(m.as_bytes()), OCI_MANIFEST, m.as_bytes())
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject"), sd);
        pushed.push(sha256(m.as_bytes()));
    }
    let r = reg.get(&format!("/v2/art/referrers/{sd}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), OCI_INDEX);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 2);
    let r = reg
        .get(&format!(
            "/v2/art/referrers/{sd}?artifactType=application/vnd.example.sbom"
        ))
        .await;
    assert_eq!(header(&r, "oci-filters-applied"), "artifactType");
    let v: Value = r.json().await.unwrap();
    let ms = v["manifests"].as_array().unwrap();
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0]["digest"], json!(pushed[1]));
    assert_eq!(ms[0]["artifactType"], json!("application/vnd.example.sbom"));
    assert_eq!(
        ms[0]["annotations"]["org.example.kind"],
        json!("application/vnd.example.sbom")
    );
    // Unknown subject: an empty index, not a 404.
    let v: Value = reg
        .get(&format!("/v2/art/referrers/{}", sha256(b"none")))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["manifests"], json!([]));
    let r = reg.get("/v2/art/referrers/sha256:bad").await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

// Docker schema2 manifests and manifest lists keep their media types.
#[tokio::test]
async fn docker_schema2_manifest_and_manifest_list() {
    let (_d, _n, reg) = node();
    let cfg = reg.blob("dk", br#"{"os":"linux"}"#).await;
    let layer = reg.blob("dk", b"gzip bytes").await;
    let m = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 14},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 10}]
    })
    .to_string();
    let ct = "application/vnd.docker.distribution.manifest.v2+json";
    assert_eq!(
        reg.put_manifest("dk", "amd64", ct, m.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );
    let list = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [{"mediaType": ct, "digest": sha256(m.as_bytes()), "size": m.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    })
    .to_string();
    let lct = "application/vnd.docker.distribution.manifest.list.v2+json";
    assert_eq!(
        reg.put_manifest("dk", "latest", lct, list.as_bytes())
            .await
            .status(),
        StatusCode::CREATED
    );
    let r = reg.get("/v2/dk/manifests/latest").await;
    assert_eq!(header(&r, "content-type"), lct);
    assert_eq!(r.text().await.unwrap(), list);
}

// Two clients uploading the same blob at once both succeed, and the blob
// is stored once, intact; so do many at once into one repository (CI jobs
// pushing the same base layer).
#[tokio::test]
async fn concurrent_uploads_of_the_same_blob() {
    let (_d, _n, reg) = node();
    let bytes = common::random_bytes(3 << 20);
    let (a, b) = tokio::join!(reg.blob("c1", &bytes), reg.blob("c2", &bytes));
    assert_eq!(a, b);
    let small = common::random_bytes(100);
    let same = futures::future::join_all((0..16).map(|_| reg.blob("c1", &small))).await;
    assert!(same.iter().all(|d| *d == sha256(&small)));
    for repo in ["c1", "c2"] {
        let got = reg
            .get(&format!("/v2/{repo}/blobs/{a}"))
            .await
            .bytes()
            .await
            .unwrap();
        assert_eq!(got.to_vec(), bytes);
    }
}

// A client that declares more bytes than it sends and hangs up: the upload
// fails and nothing becomes visible.
#[tokio::test]
async fn truncated_body_stores_nothing() {
    use tokio::io::AsyncWriteExt;
    let (_d, n, reg) = node();
    let d = sha256(b"0123456789");
    let mut s = tokio::net::TcpStream::connect(n.addr()).await.unwrap();
    let req = format!(
        "POST /v2/t/blobs/uploads/?digest={d} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 100\r\n\r\n0123456789",
        common::owner_auth_line()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    drop(s);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        reg.get(&format!("/v2/t/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );
}

// A client that stalls mid-upload is cut off after the body idle timeout,
// keeps what it sent, and can resume.
#[tokio::test]
async fn stalled_upload_is_cut_off_and_resumable() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("wharf.toml");
    std::fs::write(&cfg, "[uploads]\nbody_idle_timeout_s = 1\n").unwrap();
    let n = Node::start_with(dir.path(), &["--config", cfg.to_str().unwrap()]);
    let reg = Reg::new(&n.addr());
    let loc = header(
        &reg.req(Method::POST, "/v2/st/blobs/uploads/")
            .send()
            .await
            .unwrap(),
        "location",
    );
    let mut s = tokio::net::TcpStream::connect(n.addr()).await.unwrap();
    let req = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 1000\r\n\r\nfirst-part",
        common::owner_auth_line()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), s.read(&mut answer)).await;
    let text =
        String::from_utf8_lossy(&answer[..got.expect("server answers a stalled client").unwrap()])
            .to_string();
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    let r = reg.req(Method::GET, &loc).send().await.unwrap();
    assert_eq!(header(&r, "range"), "0-9", "the bytes received are kept");
    let d = sha256(b"first-part, then the rest");
    let r = reg
        .req(Method::PUT, &format!("{loc}?digest={d}"))
        .header("content-range", "10-24")
        .body(&b", then the rest"[..])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

// Memory stays bounded while streaming a large blob in and out.
#[tokio::test]
async fn large_blob_streams_with_bounded_memory() {
    let (dir, n, reg) = node();
    let size: usize = 1 << 30;
    let path = dir.path().join("big");
    // conv=fsync: the test's own gigabyte must be on disk before the upload,
    // or its writeback competes with the node's Raft log fsync and the
    // upload's metadata write can time out on a slow disk (a 503 that
    // says nothing about the node's memory, which is what this tests).
    common::run(std::process::Command::new("dd").args([
        "if=/dev/urandom",
        &format!("of={}", path.display()),
        "bs=4M",
        &format!("count={}", size >> 22),
        "conv=fsync",
        "status=none",
    ]));
    let d = common::run(std::process::Command::new("sha256sum").arg(&path));
    let d = format!("sha256:{}", &d[..64]);
    let out = common::run(std::process::Command::new("curl").args([
        "-sS",
        "-u",
        &common::owner_creds(),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "POST",
        "-T",
        path.to_str().unwrap(),
        // No trailing slash: curl -T would append the file name to it.
        &n.url(&format!("/v2/big/blobs/uploads?digest={d}")),
    ]));
    assert_eq!(out, "201");
    let out = common::run(std::process::Command::new("sh").arg("-c").arg(format!(
        "curl -sS -u '{}' {} | sha256sum",
        common::owner_creds(),
        n.url(&format!("/v2/big/blobs/{d}"))
    )));
    assert_eq!(
        format!("sha256:{}", &out[..64]),
        d,
        "download is byte-exact"
    );
    let pid = n.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(hwm_kb < 150 * 1024, "peak RSS {hwm_kb} kB for a 1 GiB blob");
    drop(reg);
}

// Disk full: the upload fails with a 5xx, no partial blob is ever visible,
// and the space of the failed upload is given back.
#[tokio::test]
async fn disk_full_answers_5xx_and_stores_nothing() {
    if common::filesystem_only("a full local disk") {
        return;
    }
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "SKIPPED disk_full_answers_5xx_and_stores_nothing: mounting a small tmpfs needs root"
        );
        return;
    }
    struct Mount(std::path::PathBuf);
    impl Drop for Mount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    common::run(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(&small),
    );
    let _mount = Mount(small.clone());
    let mut n = Node::start(&small);
    let reg = Reg::new(&n.addr());

    let too_big = common::random_bytes(96 << 20);
    let d = sha256(&too_big);
    let r = reg
        .req(Method::POST, &format!("/v2/full/blobs/uploads/?digest={d}"))
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        reg.get(&format!("/v2/full/blobs/{d}")).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        std::fs::read_dir(small.join("data/blobs/uploads"))
            .unwrap()
            .count(),
        0
    );
    // The failed upload's space was released: a normal push still works.
    reg.blob("full", &common::random_bytes(1 << 20)).await;
    n.kill9();
}
