// Checks the C++ API of fusedlstm against libtorch's own LSTM (torch::lstm)
// and its autograd: forward outputs, and every gradient, from
// fusedlstm::lstm_layer_backward and through libtorch's autograd of
// fusedlstm::lstm_layer_forward. Exits non-zero on the first mismatch.
#include <torch/torch.h>

#include <fusedlstm/lstm.h>

#include <cstdio>
#include <utility>
#include <string>

namespace {

int failures = 0;

void expect_close(const std::string& what, const at::Tensor& ours,
                  const at::Tensor& ref) {
  const bool ok = ours.sizes() == ref.sizes() &&
                  at::allclose(ours, ref, /*rtol=*/1e-7, /*atol=*/1e-9);
  const double err = ours.sizes() == ref.sizes()
                         ? (ours - ref).abs().max().item<double>()
                         : -1.0;
  std::printf("%-40s %s (max abs diff %.3g)\n", what.c_str(),
              ok ? "ok" : "MISMATCH", err);
  if (!ok) ++failures;
}

void check(bool reverse, bool with_proj) {
  torch::manual_seed(0);
  const int64_t T = 7, B = 3, I = 5, H = 6, P = with_proj ? 4 : H;
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  auto x = torch::randn({T, B, I}, opts).requires_grad_();
  auto h0 = torch::randn({B, P}, opts).requires_grad_();
  auto c0 = torch::randn({B, H}, opts).requires_grad_();
  auto w_ih = torch::randn({4 * H, I}, opts).requires_grad_();
  auto w_hh = torch::randn({4 * H, P}, opts).requires_grad_();
  auto b_ih = torch::randn({4 * H}, opts).requires_grad_();
  auto b_hh = torch::randn({4 * H}, opts).requires_grad_();
  auto w_hr = torch::randn({P, H}, opts).requires_grad_();

  // torch::lstm has no reverse-only mode: reverse the time axis around it.
  auto x_ref = reverse ? x.flip(0) : x;
  std::vector<at::Tensor> params = {w_ih, w_hh, b_ih, b_hh};
  if (with_proj) params.push_back(w_hr);
  auto [out_ref, hn_ref, cn_ref] =
      torch::lstm(x_ref, {h0.unsqueeze(0), c0.unsqueeze(0)}, params,
                  /*has_biases=*/true, /*num_layers=*/1, /*dropout=*/0.0,
                  /*train=*/false, /*bidirectional=*/false,
                  /*batch_first=*/false);
  if (reverse) out_ref = out_ref.flip(0);

  c10::optional<at::Tensor> proj =
      with_proj ? c10::optional<at::Tensor>(w_hr.detach()) : c10::nullopt;
  torch::NoGradGuard no_grad;
  auto fwd = fusedlstm::lstm_layer_forward(
      x.detach(), h0.detach(), c0.detach(), w_ih.detach(), w_hh.detach(),
      b_ih.detach(), b_hh.detach(), proj, c10::nullopt, reverse);
  const std::string tag = std::string(reverse ? "reverse" : "forward") +
                          (with_proj ? "+proj" : "");
  expect_close(tag + " output", fwd.output, out_ref.detach());
  expect_close(tag + " h_n", fwd.h_n, hn_ref.squeeze(0).detach());
  expect_close(tag + " c_n", fwd.c_n, cn_ref.squeeze(0).detach());
  auto inf = fusedlstm::lstm_layer_inference(
      x.detach(), h0.detach(), c0.detach(), w_ih.detach(), w_hh.detach(),
      b_ih.detach(), b_hh.detach(), proj, c10::nullopt, reverse);
  expect_close(tag + " inference output", inf.output, out_ref.detach());
  expect_close(tag + " inference h_n", inf.h_n, hn_ref.squeeze(0).detach());
  expect_close(tag + " inference c_n", inf.c_n, cn_ref.squeeze(0).detach());

  auto g_out = torch::randn({T, B, P}, opts);
  auto g_hn = torch::randn({B, P}, opts);
  auto g_cn = torch::randn({B, H}, opts);
  auto bwd = fusedlstm::lstm_layer_backward(
      g_out, g_hn, g_cn, x.detach(), h0.detach(), c0.detach(), w_ih.detach(),
      w_hh.detach(), b_ih.detach(), b_hh.detach(), proj, fwd.output, fwd.gates,
      fwd.cells, c10::nullopt, reverse);

  std::vector<at::Tensor> wrt = {x, h0, c0, w_ih, w_hh, b_ih};
  if (with_proj) wrt.push_back(w_hr);
  at::Tensor ref_grads_input;
  {
    torch::AutoGradMode enable(true);
    auto loss = (out_ref * g_out).sum() + (hn_ref.squeeze(0) * g_hn).sum() +
                (cn_ref.squeeze(0) * g_cn).sum();
    auto grads = torch::autograd::grad({loss}, wrt);
    expect_close(tag + " grad_input", bwd.grad_input, grads[0]);
    expect_close(tag + " grad_h0", bwd.grad_h0, grads[1]);
    expect_close(tag + " grad_c0", bwd.grad_c0, grads[2]);
    expect_close(tag + " grad_w_ih", bwd.grad_w_ih, grads[3]);
    expect_close(tag + " grad_w_hh", bwd.grad_w_hh, grads[4]);
    expect_close(tag + " grad_bias", bwd.grad_bias, grads[5]);
    if (with_proj) expect_close(tag + " grad_w_hr", bwd.grad_w_hr, grads[6]);

    // libtorch's autograd through lstm_layer_forward (its C++ Autograd
    // kernel, csrc/autograd.cpp): the same gradients, b_hh's equal to b_ih's.
    c10::optional<at::Tensor> proj_grad =
        with_proj ? c10::optional<at::Tensor>(w_hr) : c10::nullopt;
    auto ours = fusedlstm::lstm_layer_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh,
                                              proj_grad, c10::nullopt, reverse);
    auto our_loss = (ours.output * g_out).sum() + (ours.h_n * g_hn).sum() +
                    (ours.c_n * g_cn).sum();
    std::vector<at::Tensor> wrt_all = wrt;
    wrt_all.push_back(b_hh);
    auto via_autograd = torch::autograd::grad({our_loss}, wrt_all);
    const char* names[] = {"input", "h0", "c0", "w_ih", "w_hh", "b_ih", "w_hr"};
    for (size_t i = 0; i < wrt.size(); ++i) {
      expect_close(tag + " autograd grad_" + names[i], via_autograd[i], grads[i]);
    }
    expect_close(tag + " autograd grad_b_hh", via_autograd.back(), grads[5]);
  }
}

// bfloat16 input with a float32 c0 (lstm.h): c_n and grad_c0 come back in
// float32, and with c0's values representable in bfloat16 everything else is
// bitwise the call with a bfloat16 c0, c_n to its final rounding.
void check_float32_c0() {
  torch::manual_seed(1);
  const int64_t T = 5, B = 2, I = 3, H = 4;
  auto bf16 = torch::TensorOptions().dtype(torch::kBFloat16);
  auto x = torch::randn({T, B, I}, bf16), h0 = torch::randn({B, H}, bf16);
  auto c0 = torch::randn({B, H}, bf16);
  auto w_ih = torch::randn({4 * H, I}, bf16), w_hh = torch::randn({4 * H, H}, bf16);
  auto low = fusedlstm::lstm_layer_forward(x, h0, c0, w_ih, w_hh, c10::nullopt,
                                           c10::nullopt, c10::nullopt,
                                           c10::nullopt, false);
  auto wide = fusedlstm::lstm_layer_forward(x, h0, c0.to(torch::kFloat), w_ih,
                                            w_hh, c10::nullopt, c10::nullopt,
                                            c10::nullopt, c10::nullopt, false);
  auto g_out = torch::randn({T, B, H}, bf16), g_hn = torch::randn({B, H}, bf16);
  auto g_cn = torch::randn({B, H}, bf16);
  auto bwd = fusedlstm::lstm_layer_backward(
      g_out, g_hn, g_cn.to(torch::kFloat), x, h0, c0.to(torch::kFloat), w_ih,
      w_hh, c10::nullopt, c10::nullopt, c10::nullopt, wide.output, wide.gates,
      wide.cells, c10::nullopt, false);
  const bool ok = wide.c_n.scalar_type() == torch::kFloat &&
                  bwd.grad_c0.scalar_type() == torch::kFloat &&
                  bwd.grad_h0.scalar_type() == torch::kBFloat16 &&
                  at::equal(wide.output, low.output) &&
                  at::equal(wide.h_n, low.h_n) &&
                  at::equal(wide.c_n.to(torch::kBFloat16), low.c_n);
  std::printf("%-40s %s\n", "bfloat16 input, float32 c0", ok ? "ok" : "MISMATCH");
  if (!ok) ++failures;
}

// Both directions in one call (lstm.h): at two threads they run at once and
// each gives the bits of a one-thread lstm_layer_inference call.
// A layer's input and two directions' arguments, with a projection.
struct BidirectionalCase {
  static constexpr int64_t T = 6, B = 4, I = 5, H = 7, P = 3;
  at::Tensor x;
  fusedlstm::DirectionArgs forward, reverse;
};

BidirectionalCase bidirectional_case(uint64_t seed) {
  using C = BidirectionalCase;
  torch::manual_seed(seed);
  auto randn = [](std::initializer_list<int64_t> shape) { return torch::randn(shape); };
  auto direction = [&]() {
    return fusedlstm::DirectionArgs{randn({C::B, C::P}), randn({C::B, C::H}),
                                    randn({4 * C::H, C::I}), randn({4 * C::H, C::P}),
                                    randn({4 * C::H}), randn({4 * C::H}),
                                    randn({C::P, C::H})};
  };
  C c;
  c.x = randn({C::T, C::B, C::I});
  c.forward = direction();
  c.reverse = direction();
  return c;
}

// Runs fn at `threads` intra-op threads, then restores the count.
template <typename Fn>
auto at_threads(int threads, const Fn& fn) {
  const int old = at::get_num_threads();
  at::set_num_threads(threads);
  auto result = fn();
  at::set_num_threads(old);
  return result;
}

bool all_equal(std::initializer_list<std::pair<at::Tensor, at::Tensor>> pairs) {
  bool ok = true;
  for (const auto& [a, b] : pairs) ok = ok && at::equal(a, b);
  return ok;
}

void report(const char* what, bool ok) {
  std::printf("%-40s %s\n", what, ok ? "ok" : "MISMATCH");
  if (!ok) ++failures;
}

// At two threads the directions run at once, each with the bits of a call
// on one thread.
void check_bidirectional_inference() {
  const BidirectionalCase c = bidirectional_case(2);
  const auto &f = c.forward, &r = c.reverse;
  auto [one_f, one_r] = at_threads(1, [&] {
    return std::pair(
        fusedlstm::lstm_layer_inference(c.x, f.h0, f.c0, f.w_ih, f.w_hh, f.b_ih,
                                        f.b_hh, f.w_hr, c10::nullopt, false),
        fusedlstm::lstm_layer_inference(c.x, r.h0, r.c0, r.w_ih, r.w_hh, r.b_ih,
                                        r.b_hh, r.w_hr, c10::nullopt, true));
  });
  auto both = at_threads(
      2, [&] { return fusedlstm::lstm_bidirectional_inference(c.x, f, r, c10::nullopt); });
  report("bidirectional inference, one call",
         all_equal({{both.forward.output, one_f.output},
                    {both.forward.h_n, one_f.h_n},
                    {both.forward.c_n, one_f.c_n},
                    {both.reverse.output, one_r.output},
                    {both.reverse.h_n, one_r.h_n},
                    {both.reverse.c_n, one_r.c_n}}));
}

void check_bidirectional_training() {
  const BidirectionalCase c = bidirectional_case(3);
  const auto &f = c.forward, &r = c.reverse;
  auto forward_one = [&](const fusedlstm::DirectionArgs& a, bool reverse) {
    return fusedlstm::lstm_layer_forward(c.x, a.h0, a.c0, a.w_ih, a.w_hh, a.b_ih,
                                         a.b_hh, a.w_hr, c10::nullopt, reverse);
  };
  auto [one_f, one_r] =
      at_threads(1, [&] { return std::pair(forward_one(f, false), forward_one(r, true)); });
  auto both = at_threads(
      2, [&] { return fusedlstm::lstm_bidirectional_forward(c.x, f, r, c10::nullopt); });
  report("bidirectional forward, one call",
         all_equal({{both.forward.output, one_f.output},
                    {both.forward.h_n, one_f.h_n},
                    {both.forward.c_n, one_f.c_n},
                    {both.forward.gates, one_f.gates},
                    {both.forward.cells, one_f.cells},
                    {both.reverse.output, one_r.output},
                    {both.reverse.h_n, one_r.h_n},
                    {both.reverse.c_n, one_r.c_n},
                    {both.reverse.gates, one_r.gates},
                    {both.reverse.cells, one_r.cells}}));

  // The reverse direction leaves out its w_ih's gradient.
  auto args = [&](const fusedlstm::DirectionArgs& a, const fusedlstm::LayerForwardResult& o,
                  fusedlstm::BackwardMask mask) {
    return fusedlstm::DirectionBackwardArgs{torch::randn_like(o.output),
                                            torch::randn_like(o.h_n),
                                            torch::randn_like(o.c_n),
                                            a, o.output, o.gates, o.cells, mask};
  };
  fusedlstm::BackwardMask no_w_ih = fusedlstm::kAllGradients;
  no_w_ih[fusedlstm::gradient::w_ih] = false;
  const auto bf = args(f, one_f, fusedlstm::kAllGradients), br = args(r, one_r, no_w_ih);
  auto backward_one = [&](const fusedlstm::DirectionBackwardArgs& d, bool reverse) {
    const auto& a = d.args;
    return fusedlstm::lstm_layer_backward(d.grad_output, d.grad_h_n, d.grad_c_n, c.x, a.h0,
                                          a.c0, a.w_ih, a.w_hh, a.b_ih, a.b_hh, a.w_hr,
                                          d.output, d.gates, d.cells, c10::nullopt,
                                          reverse, d.output_mask);
  };
  auto [grad_f, grad_r] =
      at_threads(1, [&] { return std::pair(backward_one(bf, false), backward_one(br, true)); });
  auto grads = at_threads(
      2, [&] { return fusedlstm::lstm_bidirectional_backward(c.x, bf, br, c10::nullopt); });
  bool ok = grads.reverse.grad_w_ih.numel() == 0;
  for (const auto& [g, e] : {std::pair(grads.forward, grad_f), std::pair(grads.reverse, grad_r)}) {
    ok = ok && all_equal({{g.grad_input, e.grad_input},
                          {g.grad_h0, e.grad_h0},
                          {g.grad_c0, e.grad_c0},
                          {g.grad_w_ih, e.grad_w_ih},
                          {g.grad_w_hh, e.grad_w_hh},
                          {g.grad_bias, e.grad_bias},
                          {g.grad_w_hr, e.grad_w_hr}});
  }
  report("bidirectional backward, one call", ok);
}

}  // namespace

int main() {
  for (bool reverse : {false, true}) {
    for (bool with_proj : {false, true}) check(reverse, with_proj);
  }
  check_float32_c0();
  check_bidirectional_inference();
  check_bidirectional_training();
  std::printf("%s\n", failures == 0 ? "all checks passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
