package testkit

import (
	"context"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
)

// CreateDatabase creates the empty database name on the Postgres server of
// AdminDatabaseURL and returns its URL (the admin URL's, with the path
// replaced). Every test that needs Postgres gets its own this way.
func CreateDatabase(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	admin := AdminDatabaseURL()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		return "", fmt.Errorf("connect to %s: %w", redactedURL(admin), err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE DATABASE "`+name+`"`); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	return withPath(admin, "/"+name), nil
}

// DropDatabase drops the database name, with any connections still open.
func DropDatabase(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, AdminDatabaseURL())
	if err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS "`+name+`" WITH (FORCE)`); err != nil {
		return fmt.Errorf("drop database %s: %w", name, err)
	}
	return nil
}

// DeleteKeys deletes every key under prefix on the Redis of redisURL, on
// every master when cluster is set (the keys of one deployment live in
// many slots, so one key per DEL). A Redis that does not answer has
// nothing to delete: a fault test may have left it stopped.
func DeleteKeys(ctx context.Context, redisURL, prefix string, cluster bool) error {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	scan := func(ctx context.Context, rc *redis.Client) error {
		iter := rc.Scan(ctx, 0, prefix+"*", 500).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for _, k := range keys {
			if err := rc.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return iter.Err()
	}
	if cluster {
		opt, err := redis.ParseClusterURL(redisURL)
		if err != nil {
			return err
		}
		cc := redis.NewClusterClient(opt)
		defer cc.Close()
		return cc.ForEachMaster(ctx, scan)
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	opt.MaxRetries = -1
	rc := redis.NewClient(opt)
	defer rc.Close()
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	defer pcancel()
	if rc.Ping(pctx).Err() != nil {
		return nil
	}
	return scan(ctx, rc)
}

// IsClusterURL reports whether a REDIS_URL names a Redis Cluster the way
// the server reads it: seed addresses in addr= parameters.
func IsClusterURL(redisURL string) bool {
	opt, err := redis.ParseClusterURL(redisURL)
	return err == nil && len(opt.Addrs) > 1
}

// redactedURL is raw without its password, for error messages.
func redactedURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the Postgres URL"
	}
	return u.Redacted()
}
