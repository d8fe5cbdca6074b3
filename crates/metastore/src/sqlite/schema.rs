//! The SQLite schema: versioned migrations.

/// Versioned migrations, applied in order, each once.
pub(super) const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE accounts (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        image_quota INTEGER
    );
    CREATE TABLE api_keys (
        secret_id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        sealed_secret BLOB NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX api_keys_by_account ON api_keys(account_id);
    CREATE TABLE images (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        region TEXT,
        owner_id INTEGER REFERENCES accounts(id),
        state TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX images_by_owner_region ON images(owner_id, region);
    CREATE UNIQUE INDEX images_unique_name ON images(owner_id, region, name) WHERE owner_id IS NOT NULL;
    CREATE TABLE image_shares (
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        account_id INTEGER NOT NULL REFERENCES accounts(id),
        created_at INTEGER NOT NULL,
        PRIMARY KEY (image_id, account_id)
    );
    CREATE INDEX image_shares_by_account ON image_shares(account_id);",
    ),
    (
        2,
        "CREATE TABLE image_manifests (
        image_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        manifest BLOB NOT NULL,
        blocks TEXT NOT NULL,
        source_format TEXT NOT NULL,
        virtual_size INTEGER NOT NULL
    );
    CREATE INDEX image_manifests_by_region ON image_manifests(region);
    CREATE TABLE blocks (
        region TEXT NOT NULL,
        digest TEXT NOT NULL,
        refs INTEGER NOT NULL DEFAULT 0,
        stored_size INTEGER NOT NULL,
        touched_at INTEGER NOT NULL,
        PRIMARY KEY (region, digest)
    );
    CREATE INDEX blocks_unreferenced ON blocks(region, touched_at) WHERE refs <= 0;
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        image_id TEXT,
        state TEXT NOT NULL,
        progress INTEGER NOT NULL,
        params TEXT NOT NULL,
        result TEXT,
        error TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        lease_until INTEGER,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX jobs_by_state ON jobs(state, id);",
    ),
    (
        3,
        "CREATE TABLE instances (
        id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL REFERENCES accounts(id),
        region TEXT NOT NULL,
        busy INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX instances_by_owner_region ON instances(owner_id, region, created_at);",
    ),
    (
        4,
        "CREATE TABLE client_tokens (
        owner_id INTEGER NOT NULL REFERENCES accounts(id),
        token TEXT NOT NULL,
        instance_ids TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (owner_id, token)
    );",
    ),
    (
        5,
        "CREATE INDEX jobs_running_by_account ON jobs(account_id, kind) WHERE state = 'RUNNING';
    CREATE TABLE exported_files (
        bucket TEXT NOT NULL,
        name TEXT NOT NULL,
        account_id INTEGER NOT NULL,
        image_id TEXT NOT NULL,
        job_id INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (bucket, name)
    );",
    ),
    (
        6,
        "CREATE TABLE seen_signatures (
        signature TEXT PRIMARY KEY,
        fingerprint TEXT NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX seen_signatures_by_expiry ON seen_signatures(expires_at);",
    ),
    (7, "ALTER TABLE accounts ADD COLUMN storage_quota_gib INTEGER;"),
    (
        8,
        "CREATE TABLE tke_clusters (
        id TEXT PRIMARY KEY,
        owner_id INTEGER NOT NULL,
        region TEXT NOT NULL,
        os TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX tke_clusters_by_owner ON tke_clusters(owner_id, region, created_at);
    CREATE INDEX tke_clusters_by_os ON tke_clusters(os);
    CREATE TABLE tke_node_pools (
        id TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL,
        owner_id INTEGER NOT NULL,
        os TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX tke_node_pools_by_cluster ON tke_node_pools(cluster_id, created_at);
    CREATE INDEX tke_node_pools_by_os ON tke_node_pools(os);
    CREATE TABLE tke_nodes (
        instance_id TEXT PRIMARY KEY,
        cluster_id TEXT NOT NULL,
        pool_id TEXT,
        joined_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX tke_nodes_by_cluster ON tke_nodes(cluster_id, joined_at);
    CREATE TABLE tke_os_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        os_name TEXT NOT NULL,
        effective_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE TABLE tke_beta_applications (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX tke_beta_by_account ON tke_beta_applications(account_id, created_at);
    CREATE TABLE messages (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL,
        is_read INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX messages_by_account ON messages(account_id, created_at);
    CREATE TABLE notification_channels (
        account_id INTEGER PRIMARY KEY,
        webhook_url TEXT NOT NULL
    );",
    ),
    (
        9,
        "CREATE TABLE market_providers (
        account_id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        added_at INTEGER NOT NULL
    );
    CREATE TABLE market_listings (
        id TEXT PRIMARY KEY,
        provider_id INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    CREATE INDEX market_listings_by_provider ON market_listings(provider_id, created_at);",
    ),
    (
        10,
        "CREATE TABLE meter_segments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        account_id INTEGER NOT NULL,
        provider_id INTEGER,
        instance_id TEXT NOT NULL,
        started_at INTEGER NOT NULL,
        ended_at INTEGER,
        doc TEXT NOT NULL
    );
    CREATE INDEX meter_segments_by_account ON meter_segments(account_id, started_at);
    CREATE INDEX meter_segments_by_provider ON meter_segments(provider_id, started_at);
    CREATE INDEX meter_segments_open ON meter_segments(instance_id) WHERE ended_at IS NULL;",
    ),
    (
        11,
        "CREATE TABLE uploads (
        id TEXT PRIMARY KEY,
        account_id INTEGER NOT NULL,
        region TEXT NOT NULL,
        nonce BLOB NOT NULL,
        size INTEGER NOT NULL,
        manifest BLOB NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX uploads_by_account ON uploads(account_id, expires_at);",
    ),
    (
        12,
        "ALTER TABLE jobs ADD COLUMN lease_expires_ms INTEGER;
    ALTER TABLE jobs ADD COLUMN not_before_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN host TEXT;
    UPDATE jobs SET lease_expires_ms = lease_until * 1000 WHERE lease_until IS NOT NULL;",
    ),
    (
        13,
        "CREATE TABLE maintenance_reports (
        kind TEXT NOT NULL,
        region TEXT NOT NULL,
        at INTEGER NOT NULL,
        blocks INTEGER NOT NULL,
        problems INTEGER NOT NULL,
        PRIMARY KEY (kind, region)
    );",
    ),
];
