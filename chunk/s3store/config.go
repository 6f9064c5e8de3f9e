package s3store

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Config says where a store is and how to reach it. Credentials, region
// and endpoint not given here come the standard AWS way: the environment
// (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// AWS_REGION, AWS_ENDPOINT_URL, AWS_PROFILE), then the shared config and
// credentials files (~/.aws/config, ~/.aws/credentials).
type Config struct {
	// URL is s3://BUCKET/PREFIX (PREFIX may be empty).
	URL string
	// Endpoint is the S3 server's URL, e.g. http://127.0.0.1:7070, for
	// stores other than AWS; empty takes AWS_ENDPOINT_URL or AWS's own.
	Endpoint string
	// PathStyle addresses the bucket in the path (http://host/BUCKET/KEY)
	// instead of the host name: most self-hosted stores want it.
	PathStyle bool
	// Region, if set, overrides the environment's; without either it is
	// us-east-1.
	Region string
	// Credentials, if set, are used instead of the standard chain.
	Credentials aws.CredentialsProvider

	// CacheDir, if set, keeps the chunks read (and with CacheWrites, the
	// chunks written) and the pack listings on local disk, so that they
	// are not downloaded again. One process uses a cache at a time.
	CacheDir string
	// CacheWrites also keeps the chunks this store uploads in the cache.
	CacheWrites bool

	// PackSize is how large a pack grows before it is uploaded (default
	// DefaultPackSize). Each pack costs two PUTs.
	PackSize int64
	// Uploads is how many packs may be uploaded at once in the background
	// (default DefaultUploads); a writer that fills more waits.
	Uploads int

	// Transport, if set, carries the store's HTTP requests (tests count
	// them with it).
	Transport http.RoundTripper
}

// DefaultPackSize is the pack size unless Config says otherwise: 16 MiB
// is 128 PUTs per GiB stored, and a pack small enough to buffer.
const DefaultPackSize = 16 << 20

// DefaultUploads is how many packs a Store uploads at once unless Config
// says otherwise.
const DefaultUploads = 2

// ParseURL splits s3://BUCKET/PREFIX into the bucket and the prefix, which
// is returned without a leading slash and, unless empty, ending in "/".
func ParseURL(s string) (bucketName, prefix string, err error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", "", fmt.Errorf("store URL %q: %w", s, err)
	}
	if u.Scheme != "s3" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", "", fmt.Errorf("store URL %q: want s3://BUCKET/PREFIX", s)
	}
	prefix = strings.Trim(u.Path, "/")
	for _, part := range strings.Split(prefix, "/") {
		if prefix != "" && (part == "" || part == "." || part == "..") {
			return "", "", fmt.Errorf("store URL %q: empty, . or .. in the prefix", s)
		}
	}
	if prefix != "" {
		prefix += "/"
	}
	return u.Host, prefix, nil
}

// newClient builds the S3 client for cfg.
func newClient(ctx context.Context, cfg Config) (*s3.Client, error) {
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(cfg.Credentials))
	}
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w", err)
	}
	if ac.Region == "" {
		ac.Region = "us-east-1"
	}
	return s3.NewFromConfig(ac, func(o *s3.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		o.UsePathStyle = cfg.PathStyle
		if cfg.Transport != nil {
			o.HTTPClient = &http.Client{Transport: cfg.Transport}
		}
		// Every chunk is verified against its BLAKE3 ID on read; the
		// SDK's own checksums (a trailer on every PUT by default) are
		// what several S3-compatible stores refuse, and a ranged GET
		// cannot check a whole-object checksum anyway.
		o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	}), nil
}
