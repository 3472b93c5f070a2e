package interlock_test

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	interlock "github.com/interlock/interlock/clients/go"
	"github.com/interlock/interlock/clients/go/interlockv1"
)

// apiPackage is the proto package of the Interlock API.
const apiPackage = "interlock.v1"

// TestEveryRPCHasAWrapper pins that the Client holds, for every service of
// every file in proto/interlock/v1 (read from the registered descriptors),
// a field whose stub has every RPC, and that each call through it reaches
// the daemon with a key it accepts for that RPC: an empty request is
// answered (or refused as invalid), never Unimplemented, Unauthenticated or
// PermissionDenied, and a refusal is an *interlock.Error.
func TestEveryRPCHasAWrapper(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "proto", "interlock", "v1", "*.proto"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no proto files: %v", err)
	}
	for _, file := range files {
		path := "interlock/v1/" + filepath.Base(file)
		if _, err := protoregistry.GlobalFiles.FindFileByPath(path); err != nil {
			t.Errorf("%s is not in interlockv1: run make generate", path)
		}
	}

	client := newClient(t, live.APIKey, interlock.WithOperatorKey(live.OperatorKey))
	fields := reflect.ValueOf(client).Elem()
	ctx := testContext(t)
	rpcs := 0
	protoregistry.GlobalFiles.RangeFilesByPackage(apiPackage, func(file protoreflect.FileDescriptor) bool {
		services := file.Services()
		for i := range services.Len() {
			service := services.Get(i)
			stub := stubOf(fields, string(service.Name())+"Client")
			if !stub.IsValid() || stub.IsNil() {
				t.Errorf("interlock.Client has no stub for service %s", service.FullName())
				continue
			}
			methods := service.Methods()
			for j := range methods.Len() {
				method := methods.Get(j)
				rpcs++
				call := stub.MethodByName(string(method.Name()))
				if !call.IsValid() {
					t.Errorf("the %s stub has no %s", service.Name(), method.Name())
					continue
				}
				if err := callEmpty(ctx, call, method); err != nil {
					var callErr *interlock.Error
					if !errors.As(err, &callErr) {
						t.Errorf("%s: %T is no *interlock.Error: %v", method.FullName(), err, err)
						continue
					}
					switch callErr.Code {
					case codes.Unimplemented, codes.Unauthenticated, codes.PermissionDenied:
						t.Errorf("%s: %v", method.FullName(), err)
					}
				}
			}
		}
		return true
	})
	// The API has 36 RPCs; fewer means files were not registered at all.
	if rpcs < 36 {
		t.Fatalf("found %d RPCs in %s", rpcs, apiPackage)
	}
	pauses, err := client.Compute.ListPauses(ctx, &interlockv1.ListPausesRequest{})
	if err != nil || len(pauses.GetPauses()) != 0 {
		t.Fatalf("an empty request left a pause behind: %v %v", err, pauses)
	}
}

// stubOf is the exported field of the Client whose type is named typeName.
func stubOf(client reflect.Value, typeName string) reflect.Value {
	for i := range client.NumField() {
		field := client.Type().Field(i)
		if field.IsExported() && field.Type.Name() == typeName &&
			field.Type.PkgPath() == reflect.TypeFor[interlockv1.AgentRouterClient]().PkgPath() {
			return client.Field(i)
		}
	}
	return reflect.Value{}
}

// callEmpty calls method with an empty request; for a server stream, the
// error of its first Recv.
func callEmpty(ctx context.Context, call reflect.Value, method protoreflect.MethodDescriptor) error {
	input, err := protoregistry.GlobalTypes.FindMessageByName(method.Input().FullName())
	if err != nil {
		return err
	}
	var request proto.Message = input.New().Interface()
	results := call.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(request)})
	if err, _ := results[1].Interface().(error); err != nil {
		return err
	}
	if method.IsStreamingServer() {
		recv := results[0].MethodByName("Recv").Call(nil)
		err, _ := recv[1].Interface().(error)
		return err
	}
	return nil
}
