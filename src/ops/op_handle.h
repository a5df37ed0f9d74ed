// The typed dispatcher handle of a registered op, for the C++ entry points and the autograd
// functions that call an op through the dispatcher (so that its device kernel is picked).
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>

namespace latentmoe::ops {

// name: "latentmoe::<op>"; hold the result in a function-local static (one lookup per call site).
template <typename Signature>
c10::TypedOperatorHandle<Signature> find_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace latentmoe::ops
