package dev.poniard.samples.sim;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/** A small line chart written as SVG: one x axis (log2 or linear), y from 0 to a maximum, a few series. */
final class SvgChart {
    private static final String[] COLORS = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd"};
    private final String title, xLabel, yLabel;
    private final boolean logX;
    private final double yMax;
    private final List<String> names = new ArrayList<>();
    private final List<double[][]> series = new ArrayList<>();

    SvgChart(String title, String xLabel, String yLabel, boolean logX, double yMax) {
        this.title = title;
        this.xLabel = xLabel;
        this.yLabel = yLabel;
        this.logX = logX;
        this.yMax = yMax;
    }

    SvgChart series(String name, double[] xs, double[] ys) {
        names.add(name);
        series.add(new double[][] {xs, ys});
        return this;
    }

    void write(Path file) throws IOException {
        int w = 640, h = 400, left = 60, right = 20, top = 40, bottom = 50;
        double xMin = Double.MAX_VALUE, xMax = -Double.MAX_VALUE;
        for (double[][] s : series) {
            for (double x : s[0]) {
                xMin = Math.min(xMin, fx(x));
                xMax = Math.max(xMax, fx(x));
            }
        }
        double xSpan = xMax > xMin ? xMax - xMin : 1;
        StringBuilder b = new StringBuilder();
        b.append(String.format(Locale.ROOT, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                + "font-family=\"sans-serif\" font-size=\"12\">%n<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>%n", w, h));
        b.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"22\" font-size=\"15\">%s</text>%n", left, esc(title)));
        int x0 = left, y0 = h - bottom, x1 = w - right, y1 = top;
        b.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>%n", x0, y0, x1, y0));
        b.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"black\"/>%n", x0, y0, x0, y1));
        for (int k = 0; k <= 4; k++) {
            double v = yMax * k / 4;
            double y = y0 - (y0 - y1) * k / 4.0;
            b.append(String.format(Locale.ROOT, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                    + "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>%n", x0, y, x1, y, x0 - 6, y + 4, v));
        }
        double[] ticks = series.get(0)[0];
        for (double t : ticks) {
            double x = x0 + (x1 - x0) * (fx(t) - xMin) / xSpan;
            b.append(String.format(Locale.ROOT, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%s</text>%n", x, y0 + 18,
                    t == Math.rint(t) ? String.valueOf((long) t) : String.valueOf(t)));
        }
        b.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">%s</text>%n", (x0 + x1) / 2, h - 12, esc(xLabel)));
        b.append(String.format(Locale.ROOT, "<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">%s</text>%n",
                (y0 + y1) / 2, (y0 + y1) / 2, esc(yLabel)));
        for (int s = 0; s < series.size(); s++) {
            String color = COLORS[s % COLORS.length];
            StringBuilder pts = new StringBuilder();
            double[] xs = series.get(s)[0], ys = series.get(s)[1];
            for (int i = 0; i < xs.length; i++) {
                double x = x0 + (x1 - x0) * (fx(xs[i]) - xMin) / xSpan;
                double y = y0 - (y0 - y1) * Math.min(ys[i], yMax) / yMax;
                pts.append(String.format(Locale.ROOT, "%.1f,%.1f ", x, y));
                b.append(String.format(Locale.ROOT, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>%n", x, y, color));
            }
            b.append(String.format(Locale.ROOT, "<polyline points=\"%s\" fill=\"none\" stroke=\"%s\" stroke-width=\"2\"/>%n",
                    pts.toString().trim(), color));
            b.append(String.format(Locale.ROOT, "<text x=\"%d\" y=\"%d\" fill=\"%s\">%s</text>%n", x1 - 150, y1 + 16 + 16 * s,
                    color, esc(names.get(s))));
        }
        b.append("</svg>\n");
        Path parent = file.toAbsolutePath().getParent();
        if (parent != null) {
            Files.createDirectories(parent);
        }
        Files.writeString(file, b.toString());
    }

    private double fx(double x) {
        return logX ? Math.log(x) / Math.log(2) : x;
    }

    private static String esc(String s) {
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;");
    }
}
