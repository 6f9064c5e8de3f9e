package s3store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Conditions of objects, as S3 reports them.
var (
	// ErrNotFound reports an object that does not exist.
	ErrNotFound = errors.New("object not found")
	// ErrConflict reports a conditional write refused: the object was
	// created, or changed, by someone else first (HTTP 412 Precondition
	// Failed, or 409 ConditionalRequestConflict for a concurrent one).
	ErrConflict = errors.New("object changed by another writer")
	// ErrNoBucket reports a bucket that does not exist.
	ErrNoBucket = errors.New("bucket does not exist")
)

// bucket is one bucket and key prefix on an S3 server: the few operations
// the store and refs need, with S3's errors mapped to this package's.
type bucket struct {
	cli    *s3.Client
	name   string
	prefix string // "" or ending in "/"
}

func (b *bucket) key(k string) string { return b.prefix + k }

// url names an object in messages.
func (b *bucket) url(k string) string { return "s3://" + b.name + "/" + b.prefix + k }

// noRetry makes a request a single attempt. A conditional write retried
// after its first attempt succeeded unseen is refused by its own success:
// the caller must see the ambiguity instead.
func noRetry(o *s3.Options) { o.RetryMaxAttempts = 1 }

// create writes an object only if none exists under k (If-None-Match: *)
// and returns its ETag. An object already there is ErrConflict.
func (b *bucket) create(ctx context.Context, k string, data []byte, opts ...func(*s3.Options)) (string, error) {
	out, err := b.cli.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(b.name), Key: aws.String(b.key(k)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		IfNoneMatch: aws.String("*"),
	}, opts...)
	if err != nil {
		return "", b.mapErr("create", k, err)
	}
	return aws.ToString(out.ETag), nil
}

// swap replaces an object only if its ETag is still etag (If-Match) and
// returns the new ETag. An object changed or removed since is ErrConflict
// (or ErrNotFound, as some servers say for a removed one).
func (b *bucket) swap(ctx context.Context, k, etag string, data []byte, opts ...func(*s3.Options)) (string, error) {
	out, err := b.cli.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(b.name), Key: aws.String(b.key(k)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
		IfMatch: aws.String(etag),
	}, opts...)
	if err != nil {
		return "", b.mapErr("replace", k, err)
	}
	return aws.ToString(out.ETag), nil
}

// put writes an object whatever is there.
func (b *bucket) put(ctx context.Context, k string, data []byte) error {
	_, err := b.cli.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(b.name), Key: aws.String(b.key(k)),
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data))),
	})
	if err != nil {
		return b.mapErr("put", k, err)
	}
	return nil
}

// get reads a whole object of at most limit bytes, and its ETag.
func (b *bucket) get(ctx context.Context, k string, limit int64) ([]byte, string, error) {
	out, err := b.cli.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(b.name), Key: aws.String(b.key(k))})
	if err != nil {
		return nil, "", b.mapErr("get", k, err)
	}
	defer out.Body.Close()
	if n := aws.ToInt64(out.ContentLength); n > limit {
		return nil, "", fmt.Errorf("get %s: %d bytes is over the %d limit", b.url(k), n, limit)
	}
	data, err := io.ReadAll(io.LimitReader(out.Body, limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("get %s: %w", b.url(k), err)
	}
	if int64(len(data)) > limit {
		return nil, "", fmt.Errorf("get %s: over the %d byte limit", b.url(k), limit)
	}
	return data, aws.ToString(out.ETag), nil
}

// getRange reads n bytes of an object from off (a ranged GET): fewer is
// an error.
func (b *bucket) getRange(ctx context.Context, k string, off, n int64) ([]byte, error) {
	if n == 0 {
		return []byte{}, nil
	}
	out, err := b.cli.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(b.name), Key: aws.String(b.key(k)),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+n-1)),
	})
	if err != nil {
		return nil, b.mapErr("get", k, err)
	}
	defer out.Body.Close()
	buf := make([]byte, n)
	if _, err := io.ReadFull(out.Body, buf); err != nil {
		return nil, fmt.Errorf("get %s bytes %d-%d: %w", b.url(k), off, off+n-1, err)
	}
	return buf, nil
}

// object is what a listing says of an object.
type object struct {
	name     string // after the directory listed
	size     int64
	modified time.Time // by the server's clock
}

// list calls fn with every object whose key starts with dir.
func (b *bucket) list(ctx context.Context, dir string, fn func(o object) error) error {
	p := s3.NewListObjectsV2Paginator(b.cli, &s3.ListObjectsV2Input{
		Bucket: aws.String(b.name), Prefix: aws.String(b.key(dir)),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return b.mapErr("list", dir, err)
		}
		for _, o := range page.Contents {
			name, ok := strings.CutPrefix(aws.ToString(o.Key), b.key(dir))
			if !ok {
				continue
			}
			if err := fn(object{name: name, size: aws.ToInt64(o.Size), modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// remove deletes an object; one already gone is not an error.
func (b *bucket) remove(ctx context.Context, k string) error {
	_, err := b.cli.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(b.name), Key: aws.String(b.key(k))})
	if err != nil && !errors.Is(b.mapErr("delete", k, err), ErrNotFound) {
		return b.mapErr("delete", k, err)
	}
	return nil
}

// mapErr wraps err with what was done to which object and, for the
// conditions callers act on, this package's sentinel.
func (b *bucket) mapErr(op, k string, err error) error {
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() == "NoSuchBucket" {
		return fmt.Errorf("%s %s: %w: create it first (%w)", op, b.url(k), ErrNoBucket, err)
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case 404:
			return fmt.Errorf("%s %s: %w", op, b.url(k), ErrNotFound)
		case 412, 409:
			return fmt.Errorf("%s %s: %w (%w)", op, b.url(k), ErrConflict, err)
		}
	}
	return fmt.Errorf("%s %s: %w", op, b.url(k), err)
}
