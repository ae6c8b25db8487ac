package modelsync

import (
	"context"
	"fmt"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/sns"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/tfgate/tfgate/modelsync/reload"
	servingpb "github.com/tfgate/tfgate/proto/tensorflow_serving"
)

// AWSClients builds the S3 and SQS clients a Config names, with the SDK's default
// credential chain.
func AWSClients(ctx context.Context, region, s3Endpoint string, pathStyle bool, sqsEndpoint string) (*s3.Client, *sqs.Client, error) {
	awsCfg, err := loadAWSConfig(ctx, region)
	if err != nil {
		return nil, nil, err
	}
	s3c := s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		if s3Endpoint != "" {
			o.BaseEndpoint = aws.String(s3Endpoint)
			// S3-compatible stores may not know the SDK's default CRC trailers.
			o.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			o.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
		}
		o.UsePathStyle = pathStyle
	})
	sqsc := sqs.NewFromConfig(awsCfg, func(o *sqs.Options) {
		if sqsEndpoint != "" {
			o.BaseEndpoint = aws.String(sqsEndpoint)
		}
	})
	return s3c, sqsc, nil
}

// SNSClient builds an SNS client (for `modelsync publish -topic`), with the SDK's default
// credential chain; endpoint overrides AWS's (fauxqs serves SNS on its SQS port).
func SNSClient(ctx context.Context, region, endpoint string) (*sns.Client, error) {
	awsCfg, err := loadAWSConfig(ctx, region)
	if err != nil {
		return nil, err
	}
	return sns.NewFromConfig(awsCfg, func(o *sns.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	}), nil
}

// loadAWSConfig is the SDK's default config (credential chain and all) in region, or
// $AWS_REGION, or us-east-1.
func loadAWSConfig(ctx context.Context, region string) (aws.Config, error) {
	if region == "" {
		region = os.Getenv("AWS_REGION")
	}
	if region == "" {
		region = "us-east-1"
	}
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("AWS config: %w", err)
	}
	return cfg, nil
}

// NewDeps wires the production dependencies for cfg. close releases them.
func NewDeps(ctx context.Context, cfg Config) (deps Deps, close func(), err error) {
	s3c, sqsc, err := AWSClients(ctx, cfg.Region, cfg.S3Endpoint, cfg.S3PathStyle, cfg.SQSEndpoint)
	if err != nil {
		return Deps{}, nil, err
	}
	deps = Deps{S3: s3c, SQS: sqsc}
	close = func() {}
	if cfg.TFServingAddr != "" {
		conn, err := grpc.NewClient(cfg.TFServingAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return Deps{}, nil, fmt.Errorf("TF Serving address %q: %w", cfg.TFServingAddr, err)
		}
		rl, err := reload.New(servingpb.NewModelServiceClient(conn), cfg.ModelConfigFile, cfg.BasePath)
		if err != nil {
			conn.Close()
			return Deps{}, nil, err
		}
		deps.Reloader = rl
		close = func() { conn.Close() }
	}
	return deps, close, nil
}
