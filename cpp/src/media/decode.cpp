// Decoding with FFmpeg's libavformat/libavcodec (the libraries PyAV wraps), the way cfnsr.data.features does it:
// the first video track's frames chosen evenly by count, converted to RGB with libswscale (bilinear, the frame's
// colorspace); the first audio track as mono float at its own rate. Works with FFmpeg 4.4 (JetPack 6) to 7.
extern "C" {
#include <libavcodec/avcodec.h>
#include <libavformat/avformat.h>
#include <libavutil/avutil.h>
#include <libavutil/log.h>
#include <libavutil/pixdesc.h>
#include <libswscale/swscale.h>
}

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>
#include <memory>
#include <set>

#include "cfnsr/media.hpp"

namespace cfnsr::media {
namespace {

[[noreturn]] void bad_media(const std::string& what) { throw Error(Status::Media, what); }

std::string or_unknown(const char* name) { return name ? name : "unknown"; }

std::string av_message(int code) {
  char buf[AV_ERROR_MAX_STRING_SIZE] = {0};
  av_strerror(code, buf, sizeof(buf));
  return buf;
}

struct FormatClose {
  void operator()(AVFormatContext* f) const { avformat_close_input(&f); }
};
struct CodecFree {
  void operator()(AVCodecContext* c) const { avcodec_free_context(&c); }
};
struct FrameFree {
  void operator()(AVFrame* f) const { av_frame_free(&f); }
};
struct PacketFree {
  void operator()(AVPacket* p) const { av_packet_free(&p); }
};
struct SwsFree {
  void operator()(SwsContext* s) const { sws_freeContext(s); }
};

using Format = std::unique_ptr<AVFormatContext, FormatClose>;
using Codec = std::unique_ptr<AVCodecContext, CodecFree>;

Format open_input(const std::string& path) {
  if (!std::ifstream(path).good()) bad_media("clip " + path + " does not exist or cannot be read");
  AVFormatContext* raw = nullptr;
  int r = avformat_open_input(&raw, path.c_str(), nullptr, nullptr);
  if (r < 0) bad_media("cannot open " + path + " as a video (" + av_message(r) + ")");
  Format fmt(raw);
  r = avformat_find_stream_info(fmt.get(), nullptr);
  if (r < 0) bad_media("cannot read the tracks of " + path + " (" + av_message(r) + ")");
  return fmt;
}

int first_stream(const AVFormatContext* fmt, AVMediaType type) {
  for (unsigned i = 0; i < fmt->nb_streams; ++i)
    if (fmt->streams[i]->codecpar->codec_type == type) return static_cast<int>(i);
  return -1;
}

Codec open_decoder(const AVStream* stream, const std::string& path, const char* what) {
  const AVCodec* codec = avcodec_find_decoder(stream->codecpar->codec_id);
  if (codec == nullptr)
    bad_media(path + ": no decoder for its " + what + " codec '" + avcodec_get_name(stream->codecpar->codec_id) +
              "' in this FFmpeg");
  Codec ctx(avcodec_alloc_context3(codec));
  if (!ctx) throw Error(Status::Runtime, "FFmpeg: out of memory");
  int r = avcodec_parameters_to_context(ctx.get(), stream->codecpar);
  if (r >= 0) {
    ctx->thread_count = 0;  // FFmpeg's choice, as PyAV leaves it
    r = avcodec_open2(ctx.get(), codec, nullptr);
  }
  if (r < 0) bad_media("cannot open the " + std::string(what) + " decoder of " + path + " (" + av_message(r) + ")");
  return ctx;
}

// Demux and decode every frame of one stream, calling on_frame for each; returns the number decoded. A decoding
// error after some frames ends the stream there (a truncated file: the frames that decoded are used); before any
// frame it is raised.
template <typename F>
int64_t decode_stream(AVFormatContext* fmt, int index, AVCodecContext* ctx, const std::string& path,
                      const char* what, F&& on_frame) {
  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  int64_t total = 0;
  int failure = 0;
  auto drain = [&]() {
    for (;;) {
      const int r = avcodec_receive_frame(ctx, frame.get());
      if (r == AVERROR(EAGAIN) || r == AVERROR_EOF) return 0;
      if (r < 0) return r;
      on_frame(frame.get(), total++);
      av_frame_unref(frame.get());
    }
  };
  for (;;) {
    int r = av_read_frame(fmt, pkt.get());
    if (r == AVERROR_EOF) break;
    if (r < 0) {
      failure = r;
      break;
    }
    if (pkt->stream_index == index) {
      r = avcodec_send_packet(ctx, pkt.get());
      if (r >= 0 || r == AVERROR(EAGAIN)) r = drain();
    }
    av_packet_unref(pkt.get());
    if (r < 0 && r != AVERROR(EAGAIN)) {
      failure = r;
      break;
    }
  }
  if (failure == 0 && avcodec_send_packet(ctx, nullptr) >= 0) failure = drain();
  if (failure < 0 && total == 0)
    bad_media("cannot decode the " + std::string(what) + " of " + path + " (" + av_message(failure) + ")");
  return total;
}

// swscale's colorspace table of a frame: its own coefficients (BT.601 when unspecified) and range.
int sws_colorspace(const AVFrame* f) {
  switch (f->colorspace) {
    case AVCOL_SPC_BT709: return SWS_CS_ITU709;
    case AVCOL_SPC_FCC: return SWS_CS_FCC;
    case AVCOL_SPC_SMPTE240M: return SWS_CS_SMPTE240M;
    case AVCOL_SPC_BT2020_NCL:
    case AVCOL_SPC_BT2020_CL: return SWS_CS_BT2020;
    default: return SWS_CS_DEFAULT;
  }
}

bool full_range(const AVFrame* f) {
  if (f->color_range == AVCOL_RANGE_JPEG) return true;
  const auto fmt = static_cast<AVPixelFormat>(f->format);
  return fmt == AV_PIX_FMT_YUVJ420P || fmt == AV_PIX_FMT_YUVJ422P || fmt == AV_PIX_FMT_YUVJ444P ||
         fmt == AV_PIX_FMT_YUVJ440P;
}

// A decoded frame as RGB24 rows (bilinear, the frame's own colorspace and range), as PyAV's to_ndarray("rgb24").
std::vector<uint8_t> to_rgb(const AVFrame* f, std::unique_ptr<SwsContext, SwsFree>& sws, const std::string& path) {
  SwsContext* s = sws_getCachedContext(sws.release(), f->width, f->height, static_cast<AVPixelFormat>(f->format),
                                       f->width, f->height, AV_PIX_FMT_RGB24, SWS_BILINEAR, nullptr, nullptr,
                                       nullptr);
  sws.reset(s);
  if (!s) bad_media(path + ": cannot convert pixel format " +
                    or_unknown(av_get_pix_fmt_name(static_cast<AVPixelFormat>(f->format))) + " to RGB");
  const int* table = sws_getCoefficients(sws_colorspace(f));
  sws_setColorspaceDetails(s, table, full_range(f) ? 1 : 0, table, 1, 0, 1 << 16, 1 << 16);
  std::vector<uint8_t> rgb(static_cast<std::size_t>(f->width) * f->height * 3);
  uint8_t* dst[4] = {rgb.data(), nullptr, nullptr, nullptr};
  int dst_stride[4] = {f->width * 3, 0, 0, 0};
  sws_scale(s, f->data, f->linesize, 0, f->height, dst, dst_stride);
  return rgb;
}

struct VideoPass {
  std::set<int64_t> keep;
  std::vector<std::pair<int64_t, std::vector<uint8_t>>> got;
  int height = 0, width = 0;
  int64_t total = 0;
};

VideoPass decode_frames(const std::string& path, const std::set<int64_t>& keep) {
  Format fmt = open_input(path);
  const int index = first_stream(fmt.get(), AVMEDIA_TYPE_VIDEO);
  if (index < 0) bad_media(path + " has no video track");
  Codec ctx = open_decoder(fmt->streams[index], path, "video");
  VideoPass pass;
  pass.keep = keep;
  std::unique_ptr<SwsContext, SwsFree> sws;
  pass.total = decode_stream(fmt.get(), index, ctx.get(), path, "video", [&](AVFrame* f, int64_t i) {
    if (!pass.keep.count(i)) return;
    if (pass.width == 0) {
      pass.width = f->width;
      pass.height = f->height;
    }
    if (f->width != pass.width || f->height != pass.height)
      bad_media(path + ": frame " + std::to_string(i) + " is " + std::to_string(f->width) + "x" +
                std::to_string(f->height) + ", the first kept frame " + std::to_string(pass.width) + "x" +
                std::to_string(pass.height) + " (a resolution change mid-clip is not supported)");
    pass.got.emplace_back(i, to_rgb(f, sws, path));
  });
  if (pass.total == 0) bad_media(path + ": the video track has no decodable frames");
  return pass;
}

Video assemble(VideoPass&& pass, const std::vector<int64_t>& idx) {
  Video v;
  v.count = static_cast<int>(idx.size());
  v.height = pass.height;
  v.width = pass.width;
  v.total_frames = pass.total;
  const std::size_t frame_bytes = static_cast<std::size_t>(v.height) * v.width * 3;
  v.rgb.resize(frame_bytes * idx.size());
  for (std::size_t k = 0; k < idx.size(); ++k) {
    auto it = std::find_if(pass.got.begin(), pass.got.end(), [&](const auto& g) { return g.first == idx[k]; });
    if (it == pass.got.end())  // the file decoded differently on a second pass
      bad_media("frame " + std::to_string(idx[k]) + " of " + std::to_string(pass.total) + " did not decode");
    std::copy(it->second.begin(), it->second.end(), v.rgb.begin() + static_cast<std::ptrdiff_t>(k * frame_bytes));
  }
  return v;
}

float sample(const uint8_t* p, AVSampleFormat fmt, std::size_t i) {
  switch (fmt) {
    case AV_SAMPLE_FMT_FLT:
    case AV_SAMPLE_FMT_FLTP: return reinterpret_cast<const float*>(p)[i];
    case AV_SAMPLE_FMT_DBL:
    case AV_SAMPLE_FMT_DBLP: return static_cast<float>(reinterpret_cast<const double*>(p)[i]);
    case AV_SAMPLE_FMT_S16:
    case AV_SAMPLE_FMT_S16P: return reinterpret_cast<const int16_t*>(p)[i] / 32768.0f;
    case AV_SAMPLE_FMT_S32:
    case AV_SAMPLE_FMT_S32P: return static_cast<float>(reinterpret_cast<const int32_t*>(p)[i] / 2147483648.0);
    case AV_SAMPLE_FMT_S64:
    case AV_SAMPLE_FMT_S64P: return static_cast<float>(reinterpret_cast<const int64_t*>(p)[i] / 9223372036854775808.0);
    case AV_SAMPLE_FMT_U8:
    case AV_SAMPLE_FMT_U8P: return (static_cast<int>(p[i]) - 128) / 128.0f;
    default:
      throw Error(Status::Media, "audio sample format " + or_unknown(av_get_sample_fmt_name(fmt)) +
                                     " is not supported");
  }
}

int channels_of(const AVFrame* f) {
#if LIBAVUTIL_VERSION_INT >= AV_VERSION_INT(57, 24, 100)
  return f->ch_layout.nb_channels;
#else
  return f->channels;
#endif
}

// A decoded audio frame appended as mono: channels averaged in float32, summed in channel order, then divided
// (numpy's mean over the channel axis).
void append_mono(const AVFrame* f, std::vector<float>& out) {
  const auto sf = static_cast<AVSampleFormat>(f->format);
  const int ch = std::max(channels_of(f), 1);
  const bool planar = av_sample_fmt_is_planar(sf) != 0;
  const std::size_t n = static_cast<std::size_t>(f->nb_samples);
  for (std::size_t i = 0; i < n; ++i) {
    float sum = 0.0f;
    for (int c = 0; c < ch; ++c)
      sum += planar ? sample(f->extended_data[c], sf, i) : sample(f->extended_data[0], sf, i * ch + c);
    out.push_back(ch == 1 ? sum : sum / static_cast<float>(ch));
  }
}

// The presentation time of a frame in seconds, rounded once (pts * num / den), as PyAV's frame.time.
double seconds(int64_t pts, AVRational tb) {
  return static_cast<double>(pts * tb.num) / static_cast<double>(tb.den);
}

// Interrupts a blocking FFmpeg call (open, read) once `deadline` passed: a network stream that stalls.
struct Deadline {
  std::chrono::steady_clock::time_point at;
  static int check(void* self) { return std::chrono::steady_clock::now() > static_cast<Deadline*>(self)->at; }
};

}  // namespace

std::vector<Image> Video::images() const {
  std::vector<Image> out;
  const std::size_t frame_bytes = static_cast<std::size_t>(height) * width * 3;
  for (int i = 0; i < count; ++i) out.push_back(Image{rgb.data() + i * frame_bytes, height, width, 0});
  return out;
}

Video decode_video(const std::string& path, int count) {
  int64_t header = 0;
  {
    Format fmt = open_input(path);
    const int index = first_stream(fmt.get(), AVMEDIA_TYPE_VIDEO);
    if (index < 0) bad_media(path + " has no video track");
    header = fmt->streams[index]->nb_frames;
  }
  // The container's frame count is trusted only when decoding confirms it (a truncated file costs a second pass).
  if (header > 0) {
    const auto idx = frame_indices(header, count);
    auto pass = decode_frames(path, std::set<int64_t>(idx.begin(), idx.end()));
    if (pass.total == header) return assemble(std::move(pass), idx);
  }
  const int64_t total = decode_frames(path, {}).total;
  const auto idx = frame_indices(total, count);
  return assemble(decode_frames(path, std::set<int64_t>(idx.begin(), idx.end())), idx);
}

void ffmpeg_messages(bool on) { av_log_set_level(on ? AV_LOG_WARNING : AV_LOG_QUIET); }

Audio decode_audio(const std::string& path) {
  Format fmt = open_input(path);
  const int index = first_stream(fmt.get(), AVMEDIA_TYPE_AUDIO);
  if (index < 0) bad_media(path + " has no audio track (CFN-SR needs the clip's speech)");
  Codec ctx = open_decoder(fmt->streams[index], path, "audio");
  Audio a;
  a.sample_rate = ctx->sample_rate;
  const int64_t frames = decode_stream(fmt.get(), index, ctx.get(), path, "audio", [&](AVFrame* f, int64_t) {
    append_mono(f, a.samples);
    a.sample_rate = f->sample_rate;
  });
  if (frames == 0 || a.samples.empty()) bad_media(path + ": the audio track has no decodable samples");
  return a;
}

void read_into(const std::string& url, Stream& stream, bool paced, double timeout_s) {
  using std::chrono::steady_clock;
  const bool network = url.find("://") != std::string::npos;
  if (!network && !std::ifstream(url).good()) bad_media(url + ": no such file");
  if (network) avformat_network_init();
  const auto span = std::chrono::duration_cast<steady_clock::duration>(std::chrono::duration<double>(timeout_s));
  Deadline deadline{steady_clock::now() + span};
  AVFormatContext* raw = avformat_alloc_context();
  if (raw == nullptr) throw Error(Status::Runtime, "FFmpeg: out of memory");
  raw->interrupt_callback = {&Deadline::check, &deadline};
  int r = avformat_open_input(&raw, url.c_str(), nullptr, nullptr);  // frees raw on failure
  if (r < 0) bad_media("cannot open " + url + ": " + av_message(r));
  Format fmt(raw);
  r = avformat_find_stream_info(fmt.get(), nullptr);
  if (r < 0) bad_media("cannot read the tracks of " + url + ": " + av_message(r));
  const int vi = first_stream(fmt.get(), AVMEDIA_TYPE_VIDEO), ai = first_stream(fmt.get(), AVMEDIA_TYPE_AUDIO);
  if (vi < 0) bad_media(url + " has no video track");
  if (ai < 0) bad_media(url + " has no audio track (CFN-SR needs the speech)");
  Codec vctx = open_decoder(fmt->streams[vi], url, "video"), actx = open_decoder(fmt->streams[ai], url, "audio");
  std::unique_ptr<AVPacket, PacketFree> pkt(av_packet_alloc());
  std::unique_ptr<AVFrame, FrameFree> frame(av_frame_alloc());
  std::unique_ptr<SwsContext, SwsFree> sws;
  std::vector<float> mono;
  bool clock_set = false;
  steady_clock::time_point wall0;
  double media0 = 0;
  auto pace = [&](double t) {
    if (!clock_set) {
      clock_set = true, wall0 = steady_clock::now(), media0 = t;
    }
    if (paced) std::this_thread::sleep_until(wall0 + std::chrono::duration_cast<steady_clock::duration>(
                                                          std::chrono::duration<double>(t - media0)));
  };
  auto drain = [&](AVCodecContext* ctx, int index) {
    const AVRational tb = fmt->streams[index]->time_base;
    for (;;) {
      const int got = avcodec_receive_frame(ctx, frame.get());
      if (got == AVERROR(EAGAIN) || got == AVERROR_EOF) return;
      if (got < 0) bad_media("cannot decode " + url + ": " + av_message(got));
      const int64_t pts = frame->pts != AV_NOPTS_VALUE ? frame->pts : frame->best_effort_timestamp;
      if (pts != AV_NOPTS_VALUE) {
        const double t = seconds(pts, tb);
        if (index == vi) {
          const std::vector<uint8_t> rgb = to_rgb(frame.get(), sws, url);
          pace(t);
          stream.push_frame(Image{rgb.data(), frame->height, frame->width, 0}, t);
        } else {
          mono.clear();
          append_mono(frame.get(), mono);
          pace(t);
          stream.push_audio(mono.data(), mono.size(), t, frame->sample_rate);
        }
      }
      av_frame_unref(frame.get());
    }
  };
  for (;;) {
    deadline.at = steady_clock::now() + span;
    r = av_read_frame(fmt.get(), pkt.get());
    if (r == AVERROR_EOF) break;
    if (r < 0) bad_media(url + ": " + av_message(r));
    AVCodecContext* ctx = pkt->stream_index == vi ? vctx.get() : pkt->stream_index == ai ? actx.get() : nullptr;
    if (ctx != nullptr && avcodec_send_packet(ctx, pkt.get()) >= 0) drain(ctx, pkt->stream_index);
    av_packet_unref(pkt.get());
  }
  for (auto [ctx, index] : {std::make_pair(vctx.get(), vi), std::make_pair(actx.get(), ai)})
    if (avcodec_send_packet(ctx, nullptr) >= 0) drain(ctx, index);
}

}  // namespace cfnsr::media
